"""PNG figures of the evaluation report.

Figures are drawn on bare Agg canvases (no ``pyplot``), so writing a report never changes the
matplotlib backend of a notebook or script that imports this package.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor

from tl_diffusion_prior.constants import LOSS_CSV_NAME
from tl_diffusion_prior.core.serialization import atomic_write_bytes
from tl_diffusion_prior.evaluate.fidelity import FidelityResult
from tl_diffusion_prior.evaluate.steering_curves import SteeringCurves
from tl_diffusion_prior.priors.base import DiffusionPrior
from tl_diffusion_prior.training.loss_log import read_loss_csv


def _figure(width: float, height: float):
    fig = Figure(figsize=(width, height), dpi=120)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot(1, 1, 1)


def _save(fig, path: str | os.PathLike) -> Path:
    """Render ``fig`` as PNG and write it atomically (a reader never sees half a figure)."""
    png = io.BytesIO()
    fig.savefig(png, format="png", bbox_inches="tight")
    atomic_write_bytes(path, png.getvalue())
    return Path(path)


def loss_columns(path: str | os.PathLike) -> dict[str, list[float]]:
    """``step`` and every loss column of a trainer's ``loss.csv`` (empty cells become NaN)."""
    rows = read_loss_csv(path)
    if not rows:
        return {}
    columns = [c for c in rows[0] if c == "step" or "loss" in c]
    nan = float("nan")
    return {c: [nan if row.get(c) is None else float(row[c]) for row in rows] for c in columns}


def loss_history(prior: DiffusionPrior, directory: str | os.PathLike | None = None) -> dict:
    """The prior's training curve: ``training_record["history"]``, or ``loss.csv`` in
    ``directory`` (next to its weights, where the trainer's CLI copies it); empty when none."""
    history = prior.training_record.get("history")
    if isinstance(history, dict) and history:
        return {k: list(v) for k, v in history.items() if isinstance(v, list)}
    if directory is not None and (Path(directory) / LOSS_CSV_NAME).is_file():
        return loss_columns(Path(directory) / LOSS_CSV_NAME)
    return {}


def plot_loss_curves(histories: Mapping[str, Mapping[str, Sequence[float]]], path) -> Path:
    """One line per (model, loss column) against ``step``."""
    fig, ax = _figure(7.0, 4.0)
    for name, history in histories.items():
        steps = history.get("step") or list(range(len(next(iter(history.values()), []))))
        for column, values in history.items():
            positive = [v for v in values if v == v and v > 0]
            # A log axis cannot show an all-zero column (e.g. an AuxK loss that never ran).
            if column == "step" or len(values) != len(steps) or not positive:
                continue
            ax.plot(steps, values, label=f"{name}: {column}")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.set_title("Training loss")
    if ax.lines:
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no training history available", ha="center", transform=ax.transAxes)
    return _save(fig, path)


def plot_delta_lm_bars(results: Sequence[FidelityResult], path, title: str) -> Path:
    """Horizontal bars of delta LM with bootstrap intervals, one per result."""
    fig, ax = _figure(7.0, 0.35 * max(len(results), 3) + 1.0)
    labels = [r.label for r in results]
    means = [r.delta_lm.mean for r in results]
    low = [r.delta_lm.mean - r.delta_lm.low for r in results]
    high = [r.delta_lm.high - r.delta_lm.mean for r in results]
    ax.barh(range(len(results)), means, xerr=[low, high], color="tab:blue", alpha=0.8, capsize=3)
    ax.set_yticks(range(len(results)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("delta LM loss (nats/token), 95% CI over documents")
    ax.set_title(title)
    return _save(fig, path)


def plot_distortion_curves(
    curves: Mapping[str, Sequence[tuple[float, float]]], path, xlabel: str
) -> Path:
    """Delta LM against relative reconstruction error, one curve per method."""
    fig, ax = _figure(7.0, 4.5)
    for name, points in curves.items():
        pts = sorted(points)
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("delta LM loss (nats/token)")
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.set_title("Fidelity at equal distortion (lower-left is better)")
    if ax.lines:
        ax.legend(fontsize=7)
    return _save(fig, path)


def plot_steering_pareto(curves: SteeringCurves | None, path) -> Path:
    """Concept vs fluency for every (method, scale), the overall Pareto front highlighted."""
    fig, ax = _figure(6.0, 4.5)
    if curves is None or not curves.points:
        ax.text(0.5, 0.5, "steering curves not run", ha="center", transform=ax.transAxes)
        return _save(fig, path)
    for method in sorted({p.method for p in curves.points}):
        pts = sorted(
            (p.scale, p.concept.mean, p.fluency.mean) for p in curves.points if p.method == method
        )
        line = ax.plot([p[1] for p in pts], [p[2] for p in pts], marker="o", label=method)[0]
        for scale, x, y in pts:
            ax.annotate(
                f"{scale:g}",
                (x, y),
                fontsize=6,
                color=line.get_color(),
                xytext=(3, 3),
                textcoords="offset points",
            )
    front = [curves.points[i] for i in curves.front]
    ax.plot(
        [p.concept.mean for p in front],
        [p.fluency.mean for p in front],
        "k--",
        lw=1,
        label="Pareto front",
    )
    ax.set_xlabel("concept score (higher is better)")
    better = "higher" if curves.fluency_higher_is_better else "lower"
    ax.set_ylabel(f"fluency ({better} is better)")
    ax.set_title("Steering: concept vs fluency (labels: scale r)")
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_pca_scatter(
    real: Tensor,
    samples: Mapping[str, Tensor],
    basis: Tensor,
    center: Tensor,
    path,
    max_points: int = 2000,
) -> Path:
    """Real and sampled normalised activations projected on the top-2 principal directions."""
    fig, ax = _figure(6.0, 5.0)
    generator = torch.Generator().manual_seed(0)

    def project(x: Tensor) -> Tensor:
        if x.shape[0] > max_points:
            x = x[torch.randperm(x.shape[0], generator=generator)[:max_points]]
        return (x.double() - center) @ basis[:, :2]

    pts = project(real)
    ax.scatter(pts[:, 0], pts[:, 1], s=3, alpha=0.4, label="held-out (real)", color="black")
    for name, x in samples.items():
        pts = project(x)
        ax.scatter(pts[:, 0], pts[:, 1], s=3, alpha=0.4, label=name)
    ax.set_xlabel("PC 1 (normalised space)")
    ax.set_ylabel("PC 2")
    ax.set_title("Real vs sampled activations")
    ax.legend(fontsize=7, markerscale=4)
    return _save(fig, path)
