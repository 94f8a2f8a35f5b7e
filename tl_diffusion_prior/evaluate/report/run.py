"""The evaluation run: fit baselines, measure every method, and write JSON, Markdown and PNGs.

``run_evaluation`` fits the baselines on the training activations with the priors' normalisation
(or reuses given ones), captures two held-out sets no method was trained on (the corpus's held-out
split and an out-of-domain set), and measures for every method and setting: delta LM and relative
error for reconstruction, restoration from Gaussian noise and from an added steering vector; the
Frechet distance of prior samples; the equal-distortion comparison and the benchmark ratios.
``write_report`` turns the :class:`EvalReport` into ``report.json`` (every number and the settings
that produced it), ``report.md`` and figures under ``plots/``.
"""

from __future__ import annotations

import datetime
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from tl_diffusion_prior.capture.buffer import ActivationRingBuffer
from tl_diffusion_prior.core.normalizer import Normalizer
from tl_diffusion_prior.core.serialization import atomic_save_safetensors, atomic_write_json
from tl_diffusion_prior.evaluate.baselines.base import activation_rows
from tl_diffusion_prior.evaluate.concept_steering import (
    DEFAULT_CONCEPTS,
    DEFAULT_PROMPTS,
    concept_steering_curves,
)
from tl_diffusion_prior.evaluate.fidelity import (
    CleanPass,
    FidelityResult,
    TokenSet,
    evaluate_reconstructor,
    prepare_clean_pass,
    token_windows,
)
from tl_diffusion_prior.evaluate.frechet import frechet_table
from tl_diffusion_prior.evaluate.plan import (
    Baselines,
    build_plan,
    fit_baselines,
    resolve_prior_names,
)
from tl_diffusion_prior.evaluate.reconstructors import PCAReconstructor, SAEReconstructor
from tl_diffusion_prior.evaluate.report import plots
from tl_diffusion_prior.evaluate.settings import EvalSettings
from tl_diffusion_prior.evaluate.steering_curves import SteeringCurves
from tl_diffusion_prior.evaluate.targets import benchmark_targets, best_settings, curve
from tl_diffusion_prior.priors.base import DiffusionPrior

__all__ = ["Baselines", "EvalReport", "fit_baselines", "run_evaluation", "write_report"]

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
STEER_VECTORS = "steer_vectors.safetensors"


@dataclass
class EvalReport:
    """Everything one run measured; ``to_dict`` is what ``report.json`` holds."""

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


def _log(progress: bool, message: str) -> None:
    if progress:
        print(f"[eval {time.strftime('%H:%M:%S')}] {message}", flush=True)


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
    ood_texts: list[str] | None = None,
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
        token_sets: Held-out windows; the first is the in-domain set of the targets, the second
            the out-of-domain one. Default: from ``heldout_texts`` and ``ood_texts`` (themselves
            defaulting to the corpus's held-out split and pydoc topics).
        steer_vectors: Raw-space directions for the steering restoration; default: the difference
            of means between the out-of-domain and the in-domain held-out activations.
        baselines: Reuse fitted baselines instead of fitting them here.
        steering: Precomputed steering curves to include; default: computed here with
            ``concept_steering_curves`` when ``settings.steer_curve_scales`` is non-empty.
    """
    settings = settings or EvalSettings()
    started = time.perf_counter()
    timings: dict[str, float] = {}
    names = resolve_prior_names(priors, prior_names)
    hook_name = hook_name or (priors[0].config.hook_name if priors else None)
    model_name = model_name or (priors[0].config.model_name if priors else "")
    if hook_name is None:
        raise ValueError("Pass hook_name= when evaluating without priors.")
    d_model = model.cfg.d_model
    for prior in priors:
        prior.check_compatible(hook_name=hook_name, d_model=d_model)
    norm_eps = priors[0].config.norm_eps if priors else 1e-5

    if baselines is None:
        _log(progress, "fitting baselines")
        baselines = fit_baselines(
            buffer_or_train_acts,
            settings,
            norm_eps=norm_eps,
            hook_name=hook_name,
            model_name=model_name,
        )
    timings["baselines_s"] = time.perf_counter() - started
    normalizer = baselines.gaussian.normalizer

    if token_sets is None:
        from tl_diffusion_prior.evaluate import data

        seq_len = settings.resolved_seq_len(priors)

        texts = {
            "heldout": heldout_texts if heldout_texts is not None else data.heldout_texts(),
            "pydoc": ood_texts if ood_texts is not None else data.out_of_domain_texts(),
        }
        if settings.window_mode == "packed":
            token_sets = [
                data.packed_windows(model, t, name, seq_len, settings.max_sequences, settings.seed)
                for name, t in texts.items()
            ]
        else:
            token_sets = [
                token_windows(
                    model,
                    t,
                    name,
                    seq_len,
                    settings.max_sequences,
                    settings.windows_per_doc,
                )
                for name, t in texts.items()
            ]
    cleans: list[CleanPass] = [
        prepare_clean_pass(model, ts, hook_name, settings.batch_size, settings.outlier_multiple)
        for ts in token_sets
    ]
    datasets = {
        c.token_set.name: {
            "n_windows": int(c.token_set.tokens.shape[0]),
            "n_documents": int(c.token_set.doc_ids.unique().numel()),
            "seq_len": int(c.token_set.tokens.shape[1]),
            "n_patched_tokens": int(c.patch_mask.sum()),
            "n_outliers_unpatched": c.n_outliers,
            "clean_loss": float(c.clean_loss[:, 1:].double().mean()),
        }
        for c in cleans
    }
    if steer_vectors is None and len(cleans) > 1:
        steer_vectors = {"ood-minus-heldout": cleans[1].rows.mean(0) - cleans[0].rows.mean(0)}
    mean_norm = float(cleans[0].rows.norm(dim=-1).mean())

    g = baselines.gaussian
    plan = build_plan(settings, baselines, priors, names, steer_vectors, mean_norm)

    results: list[FidelityResult] = []
    fidelity_started = time.perf_counter()
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
                _log(
                    progress,
                    f"{clean.token_set.name} | {condition.label} | {result.label}: "
                    f"dLM {result.delta_lm.mean:.4f}, rel.err {result.rel_error_raw:.3f} "
                    f"({result.seconds:.1f}s)",
                )
    timings["fidelity_s"] = time.perf_counter() - fidelity_started

    if steering is None and settings.steer_curve_scales:
        _log(progress, "steering curves (plain steering and each prior)")
        steering_started = time.perf_counter()
        steering = concept_steering_curves(
            model,
            hook_name,
            dict(zip(names, priors, strict=True)),
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
        timings["steering_s"] = time.perf_counter() - steering_started

    _log(progress, "Frechet distances")
    fd_started = time.perf_counter()
    frechet, candidates = _frechet_section(
        priors, names, baselines, buffer_or_train_acts, cleans[0].rows, normalizer, settings
    )
    held = cleans[0].rows
    timings["frechet_s"] = time.perf_counter() - fd_started

    scatter = {
        "real": normalizer.normalize(held[:2000]),
        "samples": {
            k: normalizer.normalize(v[:2000])
            for k, v in candidates.items()
            if k.endswith("samples")
        },
        "basis": g.eigenvectors.cpu(),
        "center": g.mean.cpu(),
    }
    dirs = prior_dirs or [None] * len(priors)
    histories = {n: plots.loss_history(p, d) for p, n, d in zip(priors, names, dirs, strict=True)}
    histories.update(
        {
            f"SAE {s.config.d_sae}/{s.config.k}": s.config.training.get("history", {})
            for s in baselines.saes
        }
    )
    targets = benchmark_targets(
        results,
        frechet,
        prior_methods=names + ([f"{n} one-step" for n in names] if settings.one_step else []),
        multi_step_prior_methods=names,
        heldout=cleans[0].token_set.name,
        ood=cleans[1].token_set.name if len(cleans) > 1 else None,
        headline_noise_std=settings.headline_noise_std,
        headline_t=settings.headline_t,
    )
    timings["total_s"] = time.perf_counter() - started
    return EvalReport(
        model_name=model_name,
        hook_name=hook_name,
        settings=settings.to_dict(),
        priors=[
            {"name": n, "config": p.config.to_dict(), "num_parameters": p.num_parameters}
            for p, n in zip(priors, names, strict=True)
        ],
        baselines=[{"name": "gaussian", "config": g.config.to_dict()}]
        + [{"name": s.name, "config": s.config.to_dict()} for s in baselines.saes],
        datasets=datasets,
        results=results,
        frechet=frechet,
        targets=targets,
        best_settings=best_settings(results),
        loss_histories=histories,
        steering=steering,
        timings={k: round(v, 2) for k, v in timings.items()},
        created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        scatter=scatter,
        steer_vectors={k: v.detach().float().cpu() for k, v in (steer_vectors or {}).items()},
    )


def _frechet_section(
    priors: list[DiffusionPrior],
    names: list[str],
    baselines: Baselines,
    train: ActivationRingBuffer | Tensor,
    heldout: Tensor,
    normalizer: Normalizer,
    settings: EvalSettings,
) -> tuple[dict, dict[str, Tensor]]:
    """FD of prior samples, Gaussian samples and baseline reconstructions of training rows, each
    against the held-out rows, with the train-vs-held-out floor at the same sample size."""
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
    frechet = {
        "floor": floor.to_dict(),
        "results": [r.to_dict() for r in rows],
        "n_heldout": int(heldout.shape[0]),
        "d_model": int(heldout.shape[1]),
    }
    return frechet, candidates


def write_report(report: EvalReport, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``report.json``, ``report.md`` and ``plots/*.png`` under ``out_dir``."""
    from tl_diffusion_prior.evaluate.report.markdown import render_markdown

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {"json": out_dir / REPORT_JSON}
    atomic_write_json(written["json"], report.to_dict())
    if report.steer_vectors:
        # The steering-restoration vectors are inputs too: keep them next to the numbers.
        written["steer_vectors"] = out_dir / STEER_VECTORS
        atomic_save_safetensors(written["steer_vectors"], report.steer_vectors)
    plot_dir = out_dir / "plots"
    written["loss_curves"] = plots.plot_loss_curves(
        report.loss_histories, plot_dir / "loss_curves.png"
    )
    for dataset in report.datasets:
        rows = [r for r in report.results if r.dataset == dataset and r.condition == "reconstruct"]
        written[f"delta_lm_{dataset}"] = plots.plot_delta_lm_bars(
            rows, plot_dir / f"delta_lm_{dataset}.png", f"Reconstruction delta LM ({dataset})"
        )
        written[f"distortion_{dataset}"] = plots.plot_distortion_curves(
            report.curves(dataset),
            plot_dir / f"distortion_{dataset}.png",
            "relative error ||x_hat - x|| / ||x|| (raw space)",
        )
        written[f"distortion_normalized_{dataset}"] = plots.plot_distortion_curves(
            report.curves(dataset, space="normalized"),
            plot_dir / f"distortion_normalized_{dataset}.png",
            "relative error ||z_hat - z|| / ||z|| (normalised space)",
        )
    written["steering_pareto"] = plots.plot_steering_pareto(
        report.steering, plot_dir / "steering_pareto.png"
    )
    if report.scatter:
        written["pca_scatter"] = plots.plot_pca_scatter(
            report.scatter["real"],
            report.scatter["samples"],
            report.scatter["basis"],
            report.scatter["center"],
            plot_dir / "pca_scatter.png",
        )
    written["markdown"] = out_dir / REPORT_MD
    text = render_markdown(report, {k: v.relative_to(out_dir) for k, v in written.items()})
    tmp = written["markdown"].with_name(f".{REPORT_MD}.tmp")
    tmp.write_text(text)
    os.replace(tmp, written["markdown"])
    return written
