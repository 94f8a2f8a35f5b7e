"""The measuring phases of an evaluation run, in the order ``run_evaluation`` calls them.

:class:`HeldOut` runs the clean passes over the held-out windows, :func:`measure_fidelity` the
delta LM of every planned (data set, condition, method), :func:`concept_curves` the steering
curves and :func:`frechet_section` the Frechet distances. Each draws its randomness from
generators seeded with ``settings.seed``.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

import torch
from torch import Tensor

from tl_diffusion_prior.capture.buffer import ActivationRingBuffer
from tl_diffusion_prior.core.normalizer import Normalizer
from tl_diffusion_prior.evaluate.baselines.base import activation_rows
from tl_diffusion_prior.evaluate.concept_steering import concept_steering_curves
from tl_diffusion_prior.evaluate.concepts import DEFAULT_CONCEPTS, DEFAULT_PROMPTS
from tl_diffusion_prior.evaluate.fidelity import (
    CleanPass,
    Condition,
    FidelityResult,
    TokenSet,
    evaluate_reconstructor,
    prepare_clean_pass,
)
from tl_diffusion_prior.evaluate.frechet import frechet_ratio_interval, frechet_table
from tl_diffusion_prior.evaluate.plan import Baselines
from tl_diffusion_prior.evaluate.reconstructors import (
    PCAReconstructor,
    Reconstructor,
    SAEReconstructor,
)
from tl_diffusion_prior.evaluate.settings import EvalSettings
from tl_diffusion_prior.evaluate.steering_curves import SteeringCurves
from tl_diffusion_prior.priors.base import DiffusionPrior


def log_progress(progress: bool, message: str) -> None:
    """Print ``message`` with the time when ``progress`` is on."""
    if progress:
        print(f"[eval {time.strftime('%H:%M:%S')}] {message}", flush=True)


@dataclass
class HeldOut:
    """The clean passes over the held-out sets and what the conditions take from them.

    Attributes:
        cleans: One clean pass per token set; the first is the in-domain set.
        steer_vectors: The steering-restoration directions (given, or the out-of-domain minus
            in-domain mean; None with a single set and none given).
        mean_norm: Mean activation norm of the in-domain rows (the steering scales' unit).
    """

    cleans: list[CleanPass]
    steer_vectors: dict[str, Tensor] | None
    mean_norm: float

    @classmethod
    def measure(
        cls,
        model,
        token_sets: list[TokenSet],
        hook_name: str,
        settings: EvalSettings,
        steer_vectors: dict[str, Tensor] | None = None,
    ) -> HeldOut:
        """Clean passes over ``token_sets`` at ``hook_name``; see the attributes."""
        cleans = [
            prepare_clean_pass(model, ts, hook_name, settings.batch_size, settings.outlier_multiple)
            for ts in token_sets
        ]
        if steer_vectors is None and len(cleans) > 1:
            steer_vectors = {"ood-minus-heldout": cleans[1].rows.mean(0) - cleans[0].rows.mean(0)}
        return cls(cleans, steer_vectors, float(cleans[0].rows.norm(dim=-1).mean()))

    @property
    def rows(self) -> Tensor:
        """The in-domain held-out activations (the reference of the Frechet distances)."""
        return self.cleans[0].rows

    @property
    def doc_ids(self) -> dict[str, Tensor]:
        """Per token set, the document of each window: the clusters every paired bootstrap (the
        resolution, the benchmark ratios' intervals) resamples."""
        return {c.token_set.name: c.token_set.doc_ids for c in self.cleans}

    def datasets(self) -> dict[str, dict]:
        """Per token set: windows, documents, patched tokens and the clean loss."""
        return {
            c.token_set.name: {
                "n_windows": int(c.token_set.tokens.shape[0]),
                "n_documents": int(c.token_set.doc_ids.unique().numel()),
                "seq_len": int(c.token_set.tokens.shape[1]),
                "n_patched_tokens": int(c.patch_mask.sum()),
                "n_outliers_unpatched": c.n_outliers,
                "clean_loss": float(c.clean_loss[:, 1:].double().mean()),
                "windows_per_group": dict(Counter(c.token_set.groups or ())),
            }
            for c in self.cleans
        }


def measure_fidelity(
    model,
    cleans: list[CleanPass],
    plan: list[tuple[Condition, list[Reconstructor]]],
    normalizer: Normalizer,
    settings: EvalSettings,
    progress: bool = False,
) -> list[FidelityResult]:
    """Delta LM of every (data set, condition, method) of ``plan``, in that order."""
    results: list[FidelityResult] = []
    for clean in cleans:
        for condition, methods in plan:
            for method in methods:
                result = evaluate_reconstructor(
                    model,
                    clean,
                    method,
                    normalizer,
                    condition,
                    seed=settings.seed,
                    n_resamples=settings.n_bootstrap,
                )
                results.append(result)
                log_progress(
                    progress,
                    f"{clean.token_set.name} | {condition.label} | {result.label}: "
                    f"dLM {result.delta_lm.mean:.4f}, rel.err {result.rel_error_raw:.3f} "
                    f"({result.seconds:.1f}s)",
                )
    return results


def concept_curves(
    model,
    hook_name: str,
    priors: dict[str, DiffusionPrior],
    settings: EvalSettings,
    mean_norm: float,
) -> SteeringCurves:
    """Concept-vs-fluency curves of plain steering and of steering with each of ``priors``."""
    return concept_steering_curves(
        model,
        hook_name,
        priors,
        settings.steer_curve_scales,
        reference_norm=mean_norm,
        concepts=DEFAULT_CONCEPTS[: settings.steer_curve_concepts],
        prompts=DEFAULT_PROMPTS[: settings.steer_curve_prompts],
        max_new_tokens=settings.steer_curve_tokens,
        t_start=settings.headline_t,
        num_steps=settings.prior_num_steps,
        seed=settings.seed,
        n_resamples=settings.n_bootstrap,
    )


def frechet_section(
    priors: list[DiffusionPrior],
    names: list[str],
    baselines: Baselines,
    train: ActivationRingBuffer | Tensor,
    heldout: Tensor,
    normalizer: Normalizer,
    settings: EvalSettings,
    heldout_windows: Tensor | None = None,
) -> tuple[dict, dict[str, Tensor]]:
    """FD of prior samples, Gaussian samples and baseline reconstructions of training rows, each
    against the held-out rows, with the train-vs-held-out floor at the same sample size. The
    priors' samples (target (c)) also get a bootstrap interval of their normalised ratio, the
    held-out rows resampled by ``heldout_windows`` (each row's window) when given.

    Returns:
        The report's ``frechet`` section, and the compared sets by name (the ``... samples`` ones
        feed the scatter plot).
    """
    generator = torch.Generator().manual_seed(settings.seed)
    train_rows = activation_rows(train)
    n_fd = min(settings.n_fd_samples, train_rows.shape[0])
    train_sub = train_rows[torch.randperm(train_rows.shape[0], generator=generator)[:n_fd]]
    candidates: dict[str, Tensor] = {}
    for prior, name in zip(priors, names, strict=True):
        prior_gen = torch.Generator(device=prior.device).manual_seed(settings.seed)
        samples = prior.sample(n_fd, num_steps=settings.fd_sample_steps, generator=prior_gen)
        candidates[f"{name} samples"] = samples.float().cpu()
    candidates["Gaussian fit samples"] = baselines.gaussian.sample(n_fd, generator=generator)
    g = baselines.gaussian
    methods = [SAEReconstructor(s) for s in baselines.saes]
    methods += [PCAReconstructor(g, k) for k in settings.pca_ks if k <= g.config.d_model]
    for method in methods:
        knobs = ", ".join(f"{k}={v}" for k, v in method.setting.items())
        candidates[f"{method.name} ({knobs}) reconstruction"] = method.reconstruct(train_sub)
    floor, rows = frechet_table(candidates, heldout, train_sub, normalizer)
    prior_rows = rows[: len(priors)]  # the candidates' order: the priors' samples first
    for row in prior_rows if settings.n_fd_bootstrap > 0 else []:
        interval = frechet_ratio_interval(
            candidates[row.name],
            heldout,
            train_sub,
            normalizer,
            heldout_windows,
            n_resamples=settings.n_fd_bootstrap,
            seed=settings.seed,
        )
        row.normalized_ratio_ci = interval.to_dict()
    frechet = {
        "floor": floor.to_dict(),
        "results": [r.to_dict() for r in rows],
        "n_heldout": int(heldout.shape[0]),
        "d_model": int(heldout.shape[1]),
    }
    return frechet, candidates
