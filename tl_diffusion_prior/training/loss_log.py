"""The training loss history on disk: ``loss.csv`` and its plot.

Rows are dicts keyed by :data:`~tl_diffusion_prior.training.monitor.HISTORY_COLUMNS`. Both files
are written atomically. The plot is drawn on a bare Agg canvas (no ``pyplot``), so writing it never
changes the matplotlib backend of a notebook or script that imports this package.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Sequence
from typing import Any

from tl_diffusion_prior.core.serialization import atomic_write_bytes, atomic_write_text
from tl_diffusion_prior.training.monitor import HISTORY_COLUMNS


def write_loss_csv(path: str | os.PathLike, history: Sequence[dict[str, Any]]) -> None:
    """Write ``history`` rows (dicts keyed by :data:`HISTORY_COLUMNS`) to ``path`` atomically."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=HISTORY_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in history:
        writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in HISTORY_COLUMNS})
    atomic_write_text(path, out.getvalue())


def read_loss_csv(path: str | os.PathLike) -> list[dict[str, float | None]]:
    """Read a CSV written by :func:`write_loss_csv`; empty cells become None."""
    with open(path, newline="") as f:
        return [
            {k: (float(v) if v not in ("", None) else None) for k, v in row.items()}
            for row in csv.DictReader(f)
        ]


def plot_loss_curve(
    path: str | os.PathLike,
    history: Sequence[dict[str, Any]],
    gaussian_reference: float | None = None,
    title: str | None = None,
) -> None:
    """Plot train and validation loss against step, with the Gaussian reference as a line."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.2), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for key, label, style in (("train_loss", "train", "-"), ("val_loss", "val (EMA)", "o-")):
        points = [
            (row["step"], row[key])
            for row in history
            if row.get(key) is not None and math.isfinite(row[key])
        ]
        if points:
            steps, values = zip(*points, strict=True)
            ax.plot(steps, values, style, label=label, markersize=3, linewidth=1.2)
    if gaussian_reference is not None and math.isfinite(gaussian_reference):
        ax.axhline(gaussian_reference, color="grey", linestyle="--", label="Gaussian reference")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())
