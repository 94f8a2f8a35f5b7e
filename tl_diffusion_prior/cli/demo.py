"""The end-to-end demo: capture -> train both priors -> evaluate -> steer, on the default model.

The priors trained live (minutes) show the pipeline; the shipped prior (``load_default_prior``,
trained for an hour with the ``train`` command) is scored beside them, evaluated with them, and is
the one the steering example uses.

Each stage is a function of :mod:`tl_diffusion_prior.recipes`, which the tutorials reuse. The
default scale is sized for ~15 minutes on a 2-core CPU; ``--long`` trains on more data for longer;
``--quick`` (or the environment variable ``TL_DIFFUSION_PRIOR_QUICK=1``) shrinks everything to a
smoke test.

``--out`` (default ``reports/demo``) is checked before the model loads: a file, the current
directory, or an existing non-empty folder that is not a demo report is refused; a previous demo
report there is replaced only with ``--overwrite``, and is set aside under a hidden name until the
new one is complete (and put back if the run fails).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

from tl_diffusion_prior.capture import model_device
from tl_diffusion_prior.cli.common import REPORT_NAMES, add_overwrite_argument, describe_capture
from tl_diffusion_prior.cli.steer import print_comparison
from tl_diffusion_prior.constants import (
    DEFAULT_HOOK,
    DEMO_SUMMARY_NAME,
    PRIORS_DIRNAME,
    RUNS_DIRNAME,
)
from tl_diffusion_prior.core.paths import check_output_dir, holds_only, set_aside
from tl_diffusion_prior.core.serialization import atomic_write_text
from tl_diffusion_prior.data import load_default_model
from tl_diffusion_prior.priors import load_default_prior, load_prior
from tl_diffusion_prior.priors.default_prior import DEFAULT_PRIOR_DIR
from tl_diffusion_prior.recipes import (
    SCALES,
    STEER_EXAMPLE,
    STEER_EXAMPLE_SCALES,
    DemoScale,
    build_priors,
    capture_corpus,
    compare_generations,
    evaluate_demo,
    is_quick,
    score_prior,
    train_demo_prior,
)
from tl_diffusion_prior.steering import steering_vector


def stage(message: str) -> None:
    print(f"\n=== {message}", flush=True)


def steer_example(model, prior_dir: Path, scale: DemoScale, r: float) -> None:
    """Print the demo's steering example at relative scale ``r`` with the prior in ``prior_dir``."""
    prior = load_prior(prior_dir, device=model_device(model))
    positive, negative = STEER_EXAMPLE["positive"], STEER_EXAMPLE["negative"]
    vector = steering_vector(model, prior.config.hook_name, positive, negative)
    comparison = compare_generations(
        model,
        prior,
        vector,
        STEER_EXAMPLE["prompt"],
        r,
        max_new_tokens=scale.max_new_tokens,
        concept_words=STEER_EXAMPLE["concept"].split(","),
        norm_prompts=positive + negative,
        concept_lexicon=STEER_EXAMPLE["lexicon"],
    )
    print_comparison(comparison, STEER_EXAMPLE["prompt"], width=None)


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="a small smoke test (a few minutes)")
    size.add_argument("--long", action="store_true", help="more data and training (~1 hour)")
    parser.add_argument("--out", default="reports/demo", help="report folder")
    add_overwrite_argument(parser, "a demo report")
    parser.add_argument("--device", default=None)


# What a demo report folder holds: an eval report plus the training runs, priors and summary.
DEMO_NAMES = REPORT_NAMES | {RUNS_DIRNAME, PRIORS_DIRNAME, DEMO_SUMMARY_NAME}


def is_demo_dir(path: Path) -> bool:
    return holds_only(path, DEMO_NAMES)


def run_demo(args: argparse.Namespace) -> int:
    """Run ``tl-diffusion-prior demo``: every stage on the default model, then the report."""
    scale = SCALES["quick" if args.quick or is_quick() else "long" if args.long else "default"]
    # Before the model loads: a bad --out must not cost the whole demo.
    out = check_output_dir(
        args.out,
        overwrite=args.overwrite,
        what="--out (the demo's report folder)",
        is_ours=is_demo_dir,
    )
    with set_aside(out):
        return _run_stages(args, scale, out)


def _run_stages(args: argparse.Namespace, scale: DemoScale, out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    summary: dict = {"scale": asdict(scale)}

    stage("1/5 loading SmolLM2-135M-Instruct offline")
    start = time.perf_counter()
    model = load_default_model(device=args.device)
    summary["load_s"] = time.perf_counter() - start
    print(f"loaded in {summary['load_s']:.1f} s")

    stage(f"2/5 capturing {scale.n_train:,} + {scale.n_val:,} activations at {DEFAULT_HOOK}")
    buffer, capture, seconds = capture_corpus(model, "train", scale.n_train, scale.ctx)
    print(describe_capture(capture, seconds))
    summary["capture"] = {
        "activations_per_s": buffer.num_pushed / seconds,
        **asdict(capture.stats()),
    }
    val_buffer, _, _ = capture_corpus(model, "heldout", scale.n_val, scale.ctx)
    val_acts = val_buffer.filled_rows(0).float()

    stage("3/5 training the MLP flow prior and the UNet2D DDPM prior")
    priors = build_priors(model)
    results = {}
    for name, prior in priors.items():
        results[name] = train_demo_prior(name, prior, buffer, val_acts, scale, out)
    summary["training"] = {
        name: {
            "parameters": priors[name].num_parameters,
            "initial_val_loss": r.initial_val_loss,
            "val_loss": r.final_val_loss,
            "gaussian_reference": r.gaussian_reference,
            "val_over_reference": r.val_over_reference,
            "samples_per_s": r.samples_per_s,
            "steps": r.steps,
        }
        for name, r in results.items()
    }

    shipped = load_default_prior(device=model_device(model))
    scored = summary["training"]["shipped"] = score_prior(shipped, val_acts, buffer)
    print(
        f"shipped prior (load_default_prior): val loss {scored['val_loss']:.4f} vs Gaussian "
        f"reference {scored['gaussian_reference']:.4f} (ratio {scored['val_over_reference']:.3f})"
    )

    stage("4/5 evaluating against PCA, Gaussian-posterior and TopK-SAE baselines")
    evaluated = {"shipped": shipped, **priors}
    dirs = [DEFAULT_PRIOR_DIR, *(out / PRIORS_DIRNAME / name for name in priors)]
    summary["evaluation"] = evaluate_demo(model, evaluated, buffer, scale, out, dirs)

    stage("5/5 steering one example: unsteered | steered | steered + the shipped prior")
    for r in STEER_EXAMPLE_SCALES:
        steer_example(model, DEFAULT_PRIOR_DIR, scale, r)

    summary["total_s"] = time.perf_counter() - started
    atomic_write_text(out / DEMO_SUMMARY_NAME, json.dumps(summary, indent=2, default=str))
    print(f"\ndone in {summary['total_s'] / 60:.1f} min; report folder: {out}")
    return 0
