"""What an evaluation run returns: :class:`EvalReport`.

It lives apart from the code that fills it (``run.py``) and the code that renders it
(``markdown.py``, ``write.py``), so both sides import it and neither imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from tl_diffusion_prior.evaluate.fidelity import FidelityResult
from tl_diffusion_prior.evaluate.steering_curves import SteeringCurves
from tl_diffusion_prior.evaluate.targets import curve

__all__ = ["EvalReport"]


@dataclass
class EvalReport:
    """Everything one run measured; ``to_dict`` is what ``report.json`` holds.

    Attributes:
        model_name / hook_name: The model and hook the activations come from.
        settings: The :class:`~tl_diffusion_prior.evaluate.settings.EvalSettings` as a dict.
        priors: ``{"name", "config", "training", "num_parameters"}`` per prior (``training`` is
            its training record).
        baselines: ``{"name", "config", "training"}`` per baseline (the Gaussian first, then the
            SAEs).
        datasets: Held-out set name -> window counts, patched tokens and clean loss.
        results: One :class:`~tl_diffusion_prior.evaluate.fidelity.FidelityResult` per
            (data set, condition, method, setting), in the order they were measured.
        frechet: The Frechet-distance section (floor, one row per candidate, sample sizes).
        targets: The benchmark ratios (``evaluate.targets.benchmark_targets``).
        best_settings: Per ``dataset | condition | method``: the setting with the lowest delta LM.
        resolution: The smallest differences the run resolves, per data set and condition
            (:func:`~tl_diffusion_prior.evaluate.resolution.resolution`).
        loss_histories: Display name -> loss columns of each prior's and SAE's training.
        steering: The concept-vs-fluency steering curves; None when not run.
        timings: Seconds per phase (``baselines_s``, ``fidelity_s``, ``steering_s``,
            ``frechet_s``, ``total_s``).
        created: UTC time of the run (ISO 8601).
        scatter: Normalised held-out rows and samples with the PCA basis, for the scatter plot
            (not in ``report.json``).
        steer_vectors: Raw-space vectors of the steering restoration (saved next to the report,
            not in ``report.json``).
    """

    model_name: str
    hook_name: str
    settings: dict
    priors: list[dict]
    baselines: list[dict]
    datasets: dict[str, dict]
    results: list[FidelityResult]
    frechet: dict
    targets: dict
    best_settings: dict
    loss_histories: dict[str, dict]
    steering: SteeringCurves | None
    timings: dict[str, float]
    created: str
    resolution: dict = field(default_factory=dict)
    scatter: dict[str, Any] = field(default_factory=dict, repr=False)
    steer_vectors: dict[str, Tensor] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict:
        return {
            "model_name": self.model_name,
            "hook_name": self.hook_name,
            "created": self.created,
            "settings": self.settings,
            "priors": self.priors,
            "baselines": self.baselines,
            "datasets": self.datasets,
            "results": [r.to_dict() for r in self.results],
            "best_settings": self.best_settings,
            "resolution": self.resolution,
            "frechet": self.frechet,
            "targets": self.targets,
            "loss_histories": self.loss_histories,
            "steering": None if self.steering is None else self.steering.to_dict(),
            "timings": self.timings,
        }

    def curves(self, dataset: str, condition: str = "reconstruct", space: str = "raw") -> dict:
        """``method -> [(relative error, delta LM), ...]`` for one data set and condition."""
        methods = sorted(
            {
                r.method
                for r in self.results
                if r.dataset == dataset and r.condition == condition and r.method != "identity"
            }
        )
        return {m: curve(self.results, dataset, condition, m, space) for m in methods}
