"""The evaluation run: fit baselines, measure every method and gather an :class:`EvalReport`.

``run_evaluation`` fits the baselines on the training activations with the priors' normalisation
(or reuses given ones), captures held-out sets no method was trained on (the corpus's held-out
split, per source, and the out-of-domain sets), and measures for every method and setting: delta
LM and relative error for reconstruction, restoration from Gaussian noise and from an added
steering vector; the Frechet distance of prior samples; the equal-distortion comparison, the
benchmark ratios and the run's resolution.
:func:`~tl_diffusion_prior.evaluate.report.write.write_report` turns the report into files.

The phases (:mod:`~tl_diffusion_prior.evaluate.report.measure`) run in a fixed order: inputs
checked, baselines fitted or reused, held-out windows and clean passes, fidelity, steering curves,
Frechet distances, report assembled. Each draws its randomness from generators seeded with
``settings.seed``, so a run with the same inputs gives the same numbers.
"""

from __future__ import annotations

import datetime
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from tl_diffusion_prior.capture.buffer import ActivationRingBuffer
from tl_diffusion_prior.core.fingerprint import model_fingerprint
from tl_diffusion_prior.evaluate.baselines.base import Baseline
from tl_diffusion_prior.evaluate.baselines.gaussian import GaussianBaseline
from tl_diffusion_prior.evaluate.data import held_out_windows
from tl_diffusion_prior.evaluate.fidelity import FidelityResult, TokenSet
from tl_diffusion_prior.evaluate.plan import (
    Baselines,
    build_plan,
    check_baselines,
    check_train_source,
    fit_baselines,
    resolve_prior_names,
)
from tl_diffusion_prior.evaluate.report.measure import (
    HeldOut,
    concept_curves,
    frechet_section,
    log_progress,
    measure_fidelity,
)
from tl_diffusion_prior.evaluate.report.plots import loss_history
from tl_diffusion_prior.evaluate.report.types import EvalReport
from tl_diffusion_prior.evaluate.resolution import resolution
from tl_diffusion_prior.evaluate.settings import EvalSettings
from tl_diffusion_prior.evaluate.steering_curves import SteeringCurves
from tl_diffusion_prior.evaluate.targets import (
    benchmark_targets,
    best_settings,
    restoration_prior_methods,
)
from tl_diffusion_prior.priors.base import DiffusionPrior

__all__ = ["run_evaluation"]

# Rows of the held-out set and of each sample set kept for the PCA scatter plot.
SCATTER_ROWS = 2000


def run_evaluation(
    model,
    priors: list[DiffusionPrior],
    buffer_or_train_acts: ActivationRingBuffer | Tensor,
    settings: EvalSettings | None = None,
    *,
    prior_names: list[str] | None = None,
    prior_dirs: list[str | os.PathLike] | None = None,
    hook_name: str | None = None,
    model_name: str | None = None,
    token_sets: list[TokenSet] | None = None,
    heldout_texts: list[str] | None = None,
    ood_texts: list[str] | dict[str, list[str]] | None = None,
    steer_vectors: dict[str, Tensor] | None = None,
    baselines: Baselines | None = None,
    steering: SteeringCurves | None = None,
    progress: bool = True,
) -> EvalReport:
    """Measure ``priors`` against the baselines; see the module docstring.

    Args:
        model: The HookedTransformer the activations come from.
        priors: Diffusion priors over one hook of ``model`` (may be empty: baselines only).
        buffer_or_train_acts: Training activations (a filled buffer or ``[n, d_model]`` rows).
        settings: What to measure; default :class:`EvalSettings`.
        prior_names / prior_dirs: Display names and save directories (for ``loss.csv``).
        hook_name / model_name: Needed only without priors.
        token_sets: Held-out windows; the first is the in-domain set of the targets, the others
            out-of-domain ones. Default: from ``heldout_texts`` and ``ood_texts`` (themselves
            defaulting to the corpus's held-out split, cut per source, and every out-of-domain
            set of ``data.corpus``; ``ood_texts`` may be one list or a mapping name -> list).
        steer_vectors: Raw-space directions for the steering restoration; default: the difference
            of means between the out-of-domain and the in-domain held-out activations.
        baselines: Reuse fitted baselines instead of fitting them here.
        steering: Precomputed steering curves to include; default: computed here with
            ``concept_steering_curves`` when ``settings.steer_curve_scales`` is non-empty.
    """
    settings = settings or EvalSettings()
    clock = _Clock()
    run = _check_inputs(model, priors, prior_names, prior_dirs, hook_name, model_name, settings)
    check_train_source(buffer_or_train_acts, run.hook_name, run.fingerprint)
    if baselines is not None:
        check_baselines(baselines, run.hook_name, run.model_name, run.fingerprint)
    if baselines is None:
        log_progress(progress, "fitting baselines")
        baselines = fit_baselines(
            buffer_or_train_acts,
            settings,
            norm_eps=run.norm_eps,
            hook_name=run.hook_name,
            model_name=run.model_name,
        )
    clock.since_start("baselines_s")
    normalizer = baselines.gaussian.normalizer
    if token_sets is None:
        token_sets = held_out_windows(model, settings, priors, heldout_texts, ood_texts)
    held = HeldOut.measure(model, token_sets, run.hook_name, settings, steer_vectors)

    plan = build_plan(settings, baselines, priors, run.names, held.steer_vectors, held.mean_norm)
    with clock.phase("fidelity_s"):
        results = measure_fidelity(model, held.cleans, plan, normalizer, settings, progress)
    if steering is None and settings.steer_curve_scales:
        log_progress(progress, "steering curves (plain steering and each prior)")
        with clock.phase("steering_s"):
            named = dict(zip(run.names, priors, strict=True))
            steering = concept_curves(model, run.hook_name, named, settings, held.mean_norm)
    log_progress(progress, "Frechet distances")
    with clock.phase("frechet_s"):
        frechet, candidates = frechet_section(
            priors,
            run.names,
            baselines,
            buffer_or_train_acts,
            held.rows,
            normalizer,
            settings,
            held.cleans[0].row_windows,
        )
    return _assemble_report(run, baselines, held, results, frechet, candidates, steering, clock)


@dataclass
class _Run:
    """The checked inputs every phase of one run reads.

    Attributes:
        priors / names / dirs: The priors, their display names and save directories (or None).
        hook_name / model_name: The hook and model the priors (or the caller) name.
        fingerprint: The model's weight fingerprint, compared with what the priors, the training
            buffer and given baselines recorded.
        norm_eps: The epsilon of the baselines' normaliser (the first prior's, else 1e-5).
        settings: What to measure.
    """

    priors: list[DiffusionPrior]
    names: list[str]
    dirs: list[str | os.PathLike | None]
    hook_name: str
    model_name: str
    fingerprint: str
    norm_eps: float
    settings: EvalSettings


def _check_inputs(
    model,
    priors: list[DiffusionPrior],
    prior_names: list[str] | None,
    prior_dirs: list[str | os.PathLike] | None,
    hook_name: str | None,
    model_name: str | None,
    settings: EvalSettings,
) -> _Run:
    """Names, hook and model of the run; every prior must model ``hook_name`` of ``model``."""
    names = resolve_prior_names(priors, prior_names)
    hook_name = hook_name or (priors[0].config.hook_name if priors else None)
    model_name = model_name or (priors[0].config.model_name if priors else "")
    if hook_name is None:
        raise ValueError("Pass hook_name= when evaluating without priors.")
    fingerprint = model_fingerprint(model)
    for prior in priors:
        prior.check_compatible(
            hook_name=hook_name, d_model=model.cfg.d_model, model_fingerprint=fingerprint
        )
    if prior_dirs and len(prior_dirs) != len(priors):
        raise ValueError(
            f"prior_dirs must give one directory per prior ({len(priors)}), got "
            f"{len(prior_dirs)}; pass None when the priors have no save directories."
        )
    return _Run(
        priors=list(priors),
        names=names,
        dirs=list(prior_dirs) if prior_dirs else [None] * len(priors),
        hook_name=hook_name,
        model_name=model_name,
        fingerprint=fingerprint,
        norm_eps=priors[0].config.norm_eps if priors else 1e-5,
        settings=settings,
    )


def _assemble_report(
    run: _Run,
    baselines: Baselines,
    held: HeldOut,
    results: list[FidelityResult],
    frechet: dict,
    candidates: dict[str, Tensor],
    steering: SteeringCurves | None,
    clock: _Clock,
) -> EvalReport:
    """The :class:`EvalReport` of the measured phases (targets and best settings derived here)."""
    g = baselines.gaussian
    scatter = _scatter(held.rows, candidates, g)
    histories = _loss_histories(run, baselines)
    targets = _targets(run, held, results, frechet)
    settings = run.settings
    precision = resolution(
        results,
        held.doc_ids,
        ["reconstruct", f"noise std={settings.headline_noise_std:g}"],
        n_resamples=settings.n_bootstrap,
        seed=settings.seed,
    )
    clock.since_start("total_s")
    return EvalReport(
        model_name=run.model_name,
        hook_name=run.hook_name,
        settings=run.settings.to_dict(),
        priors=[
            {
                "name": n,
                "config": p.config.to_dict(),
                "training": p.training_record,
                "num_parameters": p.num_parameters,
            }
            for p, n in zip(run.priors, run.names, strict=True)
        ],
        baselines=[_describe("gaussian", g)] + [_describe(s.name, s) for s in baselines.saes],
        datasets=held.datasets(),
        results=results,
        frechet=frechet,
        targets=targets,
        best_settings=best_settings(results),
        resolution=precision,
        loss_histories=histories,
        steering=steering,
        timings={k: round(v, 2) for k, v in clock.seconds.items()},
        created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        scatter=scatter,
        steer_vectors={k: v.detach().float().cpu() for k, v in (held.steer_vectors or {}).items()},
    )


def _targets(
    run: _Run, held: HeldOut, results: list[FidelityResult], frechet: dict
) -> dict[str, dict]:
    """The benchmark ratios: the first token set is in-domain, the others out-of-domain; the
    ratios' intervals resample each set's documents, as the run's resolution does."""
    settings, names = run.settings, run.names
    return benchmark_targets(
        results,
        frechet,
        prior_methods=restoration_prior_methods(names, settings.one_step),
        multi_step_prior_methods=names,
        heldout=held.cleans[0].token_set.name,
        ood=[clean.token_set.name for clean in held.cleans[1:]],
        headline_noise_std=settings.headline_noise_std,
        headline_t=settings.headline_t,
        doc_ids=held.doc_ids,
        n_resamples=settings.n_bootstrap,
        seed=settings.seed,
    )


def _describe(name: str, baseline: Baseline) -> dict[str, Any]:
    return {"name": name, "config": baseline.config.to_dict(), "training": baseline.training_record}


def _loss_histories(run: _Run, baselines: Baselines) -> dict[str, dict]:
    """Each prior's and each SAE's training curve, by display name."""
    histories = {
        n: loss_history(p, d) for p, n, d in zip(run.priors, run.names, run.dirs, strict=True)
    }
    histories.update(
        {
            f"SAE {s.config.d_sae}/{s.config.k}": s.training_record.get("history", {})
            for s in baselines.saes
        }
    )
    return histories


def _scatter(held: Tensor, candidates: dict[str, Tensor], gaussian: GaussianBaseline) -> dict:
    """Normalised held-out rows and sample sets with the Gaussian fit's principal axes."""
    normalizer = gaussian.normalizer
    return {
        "real": normalizer.normalize(held[:SCATTER_ROWS]),
        "samples": {
            k: normalizer.normalize(v[:SCATTER_ROWS])
            for k, v in candidates.items()
            if k.endswith("samples")
        },
        "basis": gaussian.eigenvectors.cpu(),
        "center": gaussian.mean.cpu(),
    }


@dataclass
class _Clock:
    """Wall-clock seconds per phase, and since the run started."""

    started: float = field(default_factory=time.perf_counter)
    seconds: dict[str, float] = field(default_factory=dict)

    def since_start(self, key: str) -> None:
        self.seconds[key] = time.perf_counter() - self.started

    @contextmanager
    def phase(self, key: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.seconds[key] = time.perf_counter() - start
