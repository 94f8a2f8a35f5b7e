"""The training loss history: accumulated on the device, written as a CSV table and a PNG plot.

:class:`LossMonitor` keeps the running loss and the first non-finite step on the device, so the
training loop only synchronises at log, validation and checkpoint steps. The plot is drawn on a
bare Agg canvas (no ``pyplot``), so writing it never changes the matplotlib backend of a notebook
or script that imports this package.
"""

from __future__ import annotations

import csv
import io
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from tl_diffusion_prior.core import distributed

HISTORY_COLUMNS = (
    "step",
    "lr",
    "train_loss",
    "val_loss",
    "grad_norm",
    "elapsed_s",
    "samples_per_s",
)


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN/inf loss or gradient; the last good checkpoint is left intact.

    Attributes:
        step: the 1-based step whose loss or gradient norm was not finite.
        checkpoint: the last checkpoint written before it (None if there is none).
    """

    def __init__(self, step: int, checkpoint: Path | None):
        self.step = step
        self.checkpoint = checkpoint
        where = f"the last good checkpoint is {checkpoint}" if checkpoint else "no checkpoint"
        super().__init__(
            f"Non-finite loss or gradient norm at step {step}; training stopped ({where}). "
            "Lower lr, keep grad_clip on, or check the buffer for extreme activations (the "
            "capture's outlier filter)."
        )


class LossMonitor:
    """Accumulates losses on the device; only :meth:`check` and :meth:`row` synchronise."""

    def __init__(self, device: torch.device):
        self.loss_sum = torch.zeros((), dtype=torch.float32, device=device)
        self.first_bad = torch.full((), -1, dtype=torch.long, device=device)
        self.grad_norm = torch.zeros((), dtype=torch.float32, device=device)
        self.steps = 0
        self.window_start = time.perf_counter()
        self._checked_at = -1

    def add(self, step: int, loss: Tensor, grad_norm: Tensor) -> None:
        loss = loss.detach().float()
        self.loss_sum += loss
        self.grad_norm = grad_norm.detach().float()
        self.steps += 1
        finite = torch.isfinite(loss) & torch.isfinite(self.grad_norm)
        self.first_bad = torch.where((self.first_bad < 0) & ~finite, step, self.first_bad)

    def check(self, done: int, last_checkpoint: Path | None) -> None:
        """Raise :class:`NonFiniteLossError` if any rank saw a non-finite step so far."""
        if self._checked_at == done:
            return
        bad = int(distributed.all_reduce_max(self.first_bad).item())
        if bad >= 0:
            raise NonFiniteLossError(bad + 1, last_checkpoint)
        self._checked_at = done

    def row(self, done: int, lr: float, rows_per_step: int, elapsed_s: float) -> dict[str, Any]:
        now = time.perf_counter()
        mean = distributed.all_reduce_mean(self.loss_sum / max(self.steps, 1))
        row = {
            "step": done,
            "lr": lr,
            "train_loss": float(mean),
            "val_loss": None,
            "grad_norm": float(self.grad_norm),
            "elapsed_s": elapsed_s,
            "samples_per_s": self.steps * rows_per_step / max(now - self.window_start, 1e-9),
        }
        self.loss_sum.zero_()
        self.steps, self.window_start = 0, now
        return row


def write_loss_csv(path: str | os.PathLike, history: Sequence[dict[str, Any]]) -> None:
    """Write ``history`` rows (dicts keyed by :data:`HISTORY_COLUMNS`) to ``path`` atomically."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=HISTORY_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in history:
        writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in HISTORY_COLUMNS})
    _atomic_write_text(Path(path), out.getvalue())


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
    _atomic_write_bytes(Path(path), buf.getvalue())


def _atomic_write_text(path: Path, text: str) -> None:
    _atomic_write_bytes(path, text.encode())


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
