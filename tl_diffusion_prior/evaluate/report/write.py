"""Write an :class:`~tl_diffusion_prior.evaluate.report.types.EvalReport` to a folder.

``report.json`` holds every number and the settings that produced it, ``steer_vectors.safetensors``
the steering-restoration vectors, ``plots/`` the figures and ``report.md`` a summary that links
them. Every file is written atomically (a temporary sibling, then a rename), so a reader never sees
half a report file. The names come from :mod:`tl_diffusion_prior.constants`.
"""

from __future__ import annotations

import os
from pathlib import Path

from tl_diffusion_prior.constants import (
    PLOT_DELTA_LM_NAME,
    PLOT_DISTORTION_NAME,
    PLOT_DISTORTION_NORMALIZED_NAME,
    PLOT_LOSS_CURVES_NAME,
    PLOT_PCA_SCATTER_NAME,
    PLOT_STEERING_PARETO_NAME,
    PLOTS_DIRNAME,
    REPORT_JSON_NAME,
    REPORT_MD_NAME,
    STEER_VECTORS_NAME,
)
from tl_diffusion_prior.core.serialization import (
    atomic_save_safetensors,
    atomic_write_json,
    atomic_write_text,
)
from tl_diffusion_prior.evaluate.report import plots
from tl_diffusion_prior.evaluate.report.markdown import render_markdown
from tl_diffusion_prior.evaluate.report.types import EvalReport

__all__ = ["write_report"]


def write_report(report: EvalReport, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``report.json``, ``report.md`` and ``plots/*.png`` under ``out_dir``.

    Returns:
        What was written, by kind (``"json"``, ``"steer_vectors"`` when the report has vectors,
        one key per figure, ``"markdown"``), in the order ``report.md`` lists the figures.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {"json": out_dir / REPORT_JSON_NAME}
    atomic_write_json(written["json"], report.to_dict())
    if report.steer_vectors:
        # The steering-restoration vectors are inputs too: keep them next to the numbers.
        written["steer_vectors"] = out_dir / STEER_VECTORS_NAME
        atomic_save_safetensors(written["steer_vectors"], report.steer_vectors)
    written.update(_write_plots(report, out_dir / PLOTS_DIRNAME))
    written["markdown"] = out_dir / REPORT_MD_NAME
    text = render_markdown(report, {k: v.relative_to(out_dir) for k, v in written.items()})
    atomic_write_text(written["markdown"], text)
    return written


def _write_plots(report: EvalReport, plot_dir: Path) -> dict[str, Path]:
    """Every figure of ``report`` under ``plot_dir``, keyed by kind (and data set)."""
    written = {
        "loss_curves": plots.plot_loss_curves(
            report.loss_histories, plot_dir / PLOT_LOSS_CURVES_NAME
        )
    }
    for dataset in report.datasets:
        rows = [r for r in report.results if r.dataset == dataset and r.condition == "reconstruct"]
        written[f"delta_lm_{dataset}"] = plots.plot_delta_lm_bars(
            rows,
            plot_dir / PLOT_DELTA_LM_NAME.format(dataset=dataset),
            f"Reconstruction delta LM ({dataset})",
        )
        written[f"distortion_{dataset}"] = plots.plot_distortion_curves(
            report.curves(dataset),
            plot_dir / PLOT_DISTORTION_NAME.format(dataset=dataset),
            "relative error ||x_hat - x|| / ||x|| (raw space)",
        )
        written[f"distortion_normalized_{dataset}"] = plots.plot_distortion_curves(
            report.curves(dataset, space="normalized"),
            plot_dir / PLOT_DISTORTION_NORMALIZED_NAME.format(dataset=dataset),
            "relative error ||z_hat - z|| / ||z|| (normalised space)",
        )
    written["steering_pareto"] = plots.plot_steering_pareto(
        report.steering, plot_dir / PLOT_STEERING_PARETO_NAME
    )
    if report.scatter:
        written["pca_scatter"] = plots.plot_pca_scatter(
            report.scatter["real"],
            report.scatter["samples"],
            report.scatter["basis"],
            report.scatter["center"],
            plot_dir / PLOT_PCA_SCATTER_NAME,
        )
    return written
