"""Scale calibration: the relative steering scales that move a concept and keep the text fluent.

Users of steering ask first "what scale?". :func:`calibrate_scale` answers it for one vector (a
:class:`~tl_diffusion_prior.evaluate.concepts.SteeringConcept`) and a prompt set: it
generates the unsteered continuation of every prompt, then the steered one at each relative scale
``r`` (the hook adds ``r * reference_norm`` along the vector's unit direction), with or without a
prior, and scores each continuation as the steering curves do (concept lift under the unsteered
model, and the text judge's fluent / not fluent verdict).

A scale is **usable** when both hold:

* the concept moved: the 95% bootstrap interval of the mean concept lift (over prompts) lies above
  0, the unsteered text's lift by definition;
* the text stayed fluent: the fraction of continuations judged fluent is at least
  ``(1 - tolerance)`` times the unsteered fraction.

The result lists every scale's figures, the usable scales and their range, and plots both curves
with the range shaded. Greedy decoding: with few prompts the intervals are wide, so pass more
prompts for a sharper answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from tl_diffusion_prior.core.lens import LensModel
from tl_diffusion_prior.evaluate.concept_steering import (
    PLAIN,
    ConceptItem,
    ConceptRun,
    check_steering_arguments,
    relative_steering_options,
)
from tl_diffusion_prior.evaluate.concepts import SteeringConcept
from tl_diffusion_prior.evaluate.stats import ConfidenceInterval, bootstrap_ci
from tl_diffusion_prior.priors.base import DiffusionPrior
from tl_diffusion_prior.steering.config import (
    DEFAULT_DENOISE_MODE,
    DEFAULT_NUM_STEPS,
    DEFAULT_T_START,
    steering_config,
)

DEFAULT_CALIBRATION_SCALES = (0.1, 0.25, 0.35, 0.5, 0.75, 1.0)


@dataclass
class ScalePoint:
    """One scale's figures: mean concept lift and fluent fraction, each with its interval."""

    scale: float
    concept_lift: ConfidenceInterval
    fluent: ConfidenceInterval
    usable: bool


@dataclass
class ScaleCalibration:
    """What :func:`calibrate_scale` measured.

    Attributes:
        method: ``"plain steering"`` or ``"steering + prior"``.
        points: One :class:`ScalePoint` per scale, in the order given.
        unsteered_fluent: Fraction of the unsteered continuations judged fluent.
        tolerance: The fluency tolerance the verdicts used.
        texts: Scale -> the decoded continuations (0.0: unsteered), prompt order.
    """

    method: str
    points: list[ScalePoint]
    unsteered_fluent: float
    tolerance: float
    texts: dict[float, list[str]]

    @property
    def usable_scales(self) -> list[float]:
        return [p.scale for p in self.points if p.usable]

    @property
    def usable_range(self) -> tuple[float, float] | None:
        """Lowest and highest usable scale, or None when no scale is usable."""
        usable = self.usable_scales
        return (min(usable), max(usable)) if usable else None

    def table(self) -> str:
        """A Markdown table of the figures, one row per scale."""
        lines = [
            f"{self.method}; unsteered fluent fraction {self.unsteered_fluent:.2f}; usable: "
            f"lift interval above 0 and fluent >= {1 - self.tolerance:.0%} of unsteered",
            "| r | concept lift [95% CI] | fluent [95% CI] | usable |",
            "|---|---|---|---|",
        ]
        for p in self.points:
            lift, fluent = p.concept_lift, p.fluent
            lines.append(
                f"| {p.scale:g} | {lift.mean:+.2f} [{lift.low:+.2f}, {lift.high:+.2f}] | "
                f"{fluent.mean:.2f} [{fluent.low:.2f}, {fluent.high:.2f}] | "
                f"{'yes' if p.usable else 'no'} |"
            )
        return "\n".join(lines)

    def plot(self, path=None):
        """Concept lift and fluent fraction against ``r``, the usable range shaded; saved to
        ``path`` when given. Returns the figure (a plain ``Figure``: pyplot's backend is never
        touched)."""
        scales = [p.scale for p in self.points]
        fig = Figure(figsize=(6, 3.6))
        FigureCanvasAgg(fig)
        lift_ax = fig.add_subplot()
        fluent_ax = lift_ax.twinx()
        for ax, key, colour, label in (
            (lift_ax, "concept_lift", "tab:blue", "concept lift (nats)"),
            (fluent_ax, "fluent", "tab:orange", "fluent fraction"),
        ):
            cis = [getattr(p, key) for p in self.points]
            ax.errorbar(
                scales,
                [c.mean for c in cis],
                yerr=[[c.mean - c.low for c in cis], [c.high - c.mean for c in cis]],
                color=colour,
                marker="o",
                capsize=3,
            )
            ax.set_ylabel(label, color=colour)
        fluent_ax.axhline(self.unsteered_fluent, color="tab:orange", linestyle=":")
        lift_ax.axhline(0.0, color="tab:blue", linestyle=":")
        if self.usable_range is not None:
            low, high = self.usable_range
            lift_ax.axvspan(low, high, color="green", alpha=0.12, label="usable")
            lift_ax.legend(loc="upper left")
        lift_ax.set_xlabel("relative steering scale r")
        lift_ax.set_title(self.method)
        fig.tight_layout()
        if path is not None:
            fig.savefig(path, dpi=110)
        return fig


def calibrate_scale(
    model: LensModel,
    hook_name: str,
    concept: SteeringConcept,
    prompts: Sequence[str],
    reference_norm: float,
    scales: Sequence[float] = DEFAULT_CALIBRATION_SCALES,
    *,
    prior: DiffusionPrior | None = None,
    tolerance: float = 0.2,
    max_new_tokens: int = 24,
    t_start: float = DEFAULT_T_START,
    num_steps: int = DEFAULT_NUM_STEPS,
    seed: int = 0,
    denoise_mode: str = DEFAULT_DENOISE_MODE,
    n_resamples: int = 1000,
) -> ScaleCalibration:
    """Sweep ``scales`` for ``concept`` on ``prompts`` and say which are usable (module docstring).

    Args:
        model / hook_name: The model and the hook to steer.
        concept: The contrast prompts (the vector), concept words (the lift) and lexicon.
        prompts: Prompts to continue; every figure is a mean over them.
        reference_norm: The activation norm ``r`` is relative to (``mean_activation_norm`` or
            ``reference_norm_from_prior``).
        scales: Relative scales to try (each > 0).
        prior: Denoise the steered activations with this prior (None: plain steering).
        tolerance: Allowed relative drop of the fluent fraction from the unsteered text.
        max_new_tokens / t_start / num_steps / seed: Generation and denoising settings.
        denoise_mode: How the prior is used (``SteeringConfig.denoise_mode``).
        n_resamples: Bootstrap resamples per interval.
    """
    if not scales or any(not s > 0 for s in scales):
        raise ValueError(f"scales must be non-empty and each > 0, got {list(scales)!r}.")
    if not 0.0 <= tolerance < 1.0:
        raise ValueError(f"tolerance must be in [0, 1), got {tolerance!r}.")
    priors = {"prior": prior} if prior is not None else {}
    check_steering_arguments(model, hook_name, priors, scales, reference_norm, [concept], prompts)
    run = ConceptRun.prepare(model, hook_name, [concept], prompts, max_new_tokens)
    options = relative_steering_options(reference_norm, t_start, num_steps, seed)
    options["denoise_mode"] = denoise_mode
    steering_config(1.0, None, options)  # an invalid setting fails before any generation
    unsteered = run.items_at(0.0, None, options)
    unsteered_fluent = sum(item.fluent for item in unsteered) / len(unsteered)
    texts = {0.0: [item.text for item in unsteered]}
    points = []
    for scale in scales:
        items = run.items_at(float(scale), prior, options)
        texts[float(scale)] = [item.text for item in items]
        points.append(_point(float(scale), items, unsteered_fluent, tolerance, n_resamples, seed))
    method = "steering + prior" if prior is not None else PLAIN
    return ScaleCalibration(method, points, unsteered_fluent, tolerance, texts)


def _point(
    scale: float,
    items: list[ConceptItem],
    unsteered_fluent: float,
    tolerance: float,
    n_resamples: int,
    seed: int,
) -> ScalePoint:
    resampling = dict(n_resamples=n_resamples, seed=seed)
    lift = bootstrap_ci([item.lift for item in items], **resampling)
    fluent = bootstrap_ci([float(item.fluent) for item in items], **resampling)
    usable = lift.low > 0.0 and fluent.mean >= (1.0 - tolerance) * unsteered_fluent
    return ScalePoint(scale, lift, fluent, usable)
