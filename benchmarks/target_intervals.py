"""Targets (a) and (b) of issue 14 on the held-out text, each with its paired 95% interval,
without the rest of the evaluation.

``eval`` reports (a) restoration from noise of std ``headline_noise_std`` at matched t, best prior
delta LM / best baseline delta LM, and (b) reconstruction at ``headline_t``, prior / best SAE,
with a bootstrap interval of each ratio that resamples the held-out documents once for both
methods (``evaluate.targets``). Running all of ``eval`` for these two figures takes half an hour
here; this script runs only what they read, with eval's settings, data, seeds and functions: the
held-out windows of the corpus's held-out split (no out-of-domain set), the baselines fitted on
``--buffer`` as eval fits them plus the ``--sae`` SAEs loaded as ``eval --sae`` loads them, and of
eval's plan (``build_plan``) only the headline-noise restoration of the priors and every baseline
(PCA, SAEs, Gaussian posterior, Wiener filter: "best baseline" is chosen among the same methods)
and the reconstruction of the SAEs and of the priors at ``headline_t``. The round trip, the
curves, Frechet distances and steering are left out. Each method's delta LM depends only on its
own seed and windows, so with the same buffer, SAEs and settings the ratios are eval's.

As in ``frechet_interval.py``, ``sae_lens`` defaults to ``[]`` (the SAEs come from ``--sae``);
put eval's ``sae_lens`` entries into ``--settings`` to train them here as eval would.

    .venv/bin/python benchmarks/target_intervals.py --buffer broad_buffer.safetensors \\
        --sae saes/sae_lens_topk_k32_x8 --sae saes/sae_lens_topk_k128_x8 \\
        --settings '{"max_sequences": 24}' --out benchmarks/results/target_intervals
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from tl_diffusion_prior import priors as prior_package
from tl_diffusion_prior.cli.common import add_model_kind_argument
from tl_diffusion_prior.cli.eval import _external_saes, _training_rows
from tl_diffusion_prior.data import models
from tl_diffusion_prior.evaluate.data import held_out_windows
from tl_diffusion_prior.evaluate.fidelity import Condition, FidelityResult
from tl_diffusion_prior.evaluate.plan import (
    Baselines,
    build_plan,
    check_baselines,
    check_priors_match,
    fit_baselines,
    resolve_prior_names,
)
from tl_diffusion_prior.evaluate.reconstructors import Reconstructor
from tl_diffusion_prior.evaluate.report.measure import HeldOut, measure_fidelity
from tl_diffusion_prior.evaluate.settings import EvalSettings
from tl_diffusion_prior.evaluate.targets import (
    BASELINE_PREFIXES,
    benchmark_targets,
    restoration_prior_methods,
)

# The entries of ``benchmark_targets`` this script measures everything for.
TARGETS = ("a_restoration_heldout", "b_reconstruction_vs_sae")


def main() -> None:
    args = _arguments()
    settings = EvalSettings.from_dict({"sae_lens": [], **json.loads(args.settings)})
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    dirs = [prior_package.resolve_prior_dir(path) for path in args.prior]
    priors = [prior_package.load_prior(path, device=args.device) for path in dirs]
    model, baselines = _model_and_baselines(args, priors, settings)
    targets, results = _measure_targets(model, priors, baselines, settings)
    report = {
        "targets": targets,
        "seconds": time.perf_counter() - start,
        "settings": settings.to_dict(),
        "priors": [str(path) for path in dirs],
        "saes": args.sae,
        "buffer": args.buffer,
        "results": [r.to_dict() for r in results],
    }
    (args.out / "targets.json").write_text(json.dumps(report, indent=2) + "\n")
    for key, entry in targets.items():
        print(_line(key, entry))
    print(f"{report['seconds']:.0f} s; written to {args.out / 'targets.json'}")


def _measure_targets(
    model, priors: list, baselines: Baselines, settings: EvalSettings
) -> tuple[dict[str, dict], list[FidelityResult]]:
    """(a) and (b) on the held-out set, as ``run_evaluation`` measures and derives them, and the
    fidelity results they were read from."""
    names = resolve_prior_names(priors, None)
    token_sets = held_out_windows(model, settings, priors, ood={})  # the in-domain set only
    held = HeldOut.measure(model, token_sets, priors[0].config.hook_name, settings)
    plan = [
        (condition, [m for m in methods if _read_by_targets(condition, m, settings, names)])
        for condition, methods in build_plan(
            settings, baselines, priors, names, None, held.mean_norm
        )
    ]
    normalizer = baselines.gaussian.normalizer
    results = measure_fidelity(model, held.cleans, plan, normalizer, settings, progress=True)
    targets = benchmark_targets(
        results,
        None,
        prior_methods=restoration_prior_methods(names, settings.one_step),
        multi_step_prior_methods=names,
        heldout=held.cleans[0].token_set.name,
        ood=None,
        headline_noise_std=settings.headline_noise_std,
        headline_t=settings.headline_t,
        doc_ids=held.doc_ids,
        n_resamples=settings.n_bootstrap,
        seed=settings.seed,
    )
    return {key: targets[key] for key in TARGETS}, results


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prior", nargs="+", default=["default"], help="prior folders")
    parser.add_argument("--buffer", required=True, help="training rows, as for eval --buffer")
    parser.add_argument(
        "--sae", action="append", default=[], metavar="DIR|RELEASE:SAE_ID", help="as eval --sae"
    )
    parser.add_argument("--settings", default="{}", help="EvalSettings overrides (JSON)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default=None)
    add_model_kind_argument(parser)
    return parser.parse_args()


def _model_and_baselines(args: argparse.Namespace, priors: list, settings: EvalSettings):
    """The model and the baselines, loaded, fitted and checked as ``eval --buffer --sae`` does."""
    config = priors[0].config
    external_saes = _external_saes(args.sae, priors[0], args.device)
    model = models.load_model(config.model_name, device=args.device, kind=args.model_kind)
    fingerprint = check_priors_match(model, priors)
    train = _training_rows(args, model, settings, priors, fingerprint)
    baselines = fit_baselines(
        train,
        settings,
        norm_eps=config.norm_eps,
        hook_name=config.hook_name,
        model_name=config.model_name,
        progress=True,
    )
    if external_saes:
        check_baselines(
            Baselines(baselines.gaussian, external_saes),
            config.hook_name,
            config.model_name,
            fingerprint,
        )
        baselines.saes += external_saes
    return model, baselines


def _read_by_targets(
    condition: Condition, method: Reconstructor, settings: EvalSettings, names: list[str]
) -> bool:
    """Whether (a) or (b) on the held-out set reads ``method`` under ``condition`` (the priors
    are ``names``): at the headline noise every prior (with its one-step variant) and every
    baseline, which "best" ranges over in ``evaluate.targets``; in reconstruction the SAEs and
    the multi-step priors at the headline t. The round trip and the identity are left out."""
    if condition.kind == "noise":
        prior = method.name in restoration_prior_methods(names, one_step=True)
        baseline = method.name.startswith(BASELINE_PREFIXES)
        return condition.noise_std == settings.headline_noise_std and (prior or baseline)
    if condition.kind == "reconstruct":
        prior_at_t = method.name in names and method.setting.get("t") == settings.headline_t
        return method.name.startswith("SAE") or prior_at_t
    return False


def _line(key: str, entry: dict) -> str:
    """One target as ``ratio [low, high] = numerator / denominator``, or why it is missing."""
    if entry["ratio"] is None:
        return f"{key}: not computed ({entry['reason']})"
    ci = entry["ratio_ci"]
    interval = f" [{ci['low']:.3f}, {ci['high']:.3f}]" if ci else ""
    num, den = entry["numerator"], entry["denominator"]
    return (
        f"{key}: {entry['ratio']:.4f}{interval} (target <= {entry['target']}) = "
        f"{num['label']} {num['delta_lm']:.4f} / {den['label']} {den['delta_lm']:.4f}"
    )


if __name__ == "__main__":
    main()
