"""The end-to-end demo: capture -> train both priors -> evaluate -> steer, on the default model.

Each stage is a function the tutorials reuse. The default scale is sized for ~15 minutes on a 2-core
CPU; ``--long`` trains on more data for longer; ``--quick`` (or the environment variable
``TL_DIFFUSION_PRIOR_QUICK=1``) shrinks everything to a smoke test.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from tl_diffusion_prior.buffer import ActivationRingBuffer
from tl_diffusion_prior.capture import ActivationCapture, CaptureConfig, fill_buffer, model_device
from tl_diffusion_prior.constants import DEFAULT_HOOK, QUICK_ENV_VAR
from tl_diffusion_prior.priors.base import DiffusionPrior
from tl_diffusion_prior.priors.mlp import MLPPrior, MLPPriorConfig
from tl_diffusion_prior.priors.unet import UNetPrior, UNetPriorConfig
from tl_diffusion_prior.token_source import corpus_token_source
from tl_diffusion_prior.train import TrainConfig, TrainResult, train_prior
from tl_diffusion_prior.train_cli import PRIOR_PRESETS


@dataclass
class DemoScale:
    """How much data and compute each stage gets.

    Attributes:
        n_train: activations captured from the corpus's training split.
        n_val: held-out activations (validation loss and evaluation).
        ctx: tokens per captured sequence.
        train_seconds: wall-clock budget per prior; steps are calibrated to fit it.
        batch_size: training batch size.
        eval_sequences: held-out sequences per evaluation set.
        max_new_tokens: tokens generated in the steering example.
        eval_settings: ``EvalSettings`` fields over its ``quick`` preset (see
            :func:`demo_eval_settings`).
    """

    n_train: int
    n_val: int
    ctx: int
    train_seconds: float
    batch_size: int
    eval_sequences: int
    max_new_tokens: int
    eval_settings: dict = field(default_factory=dict)


# Sizes for ~15 minutes on an idle 2-core CPU at "default" (the UNet's 20-step denoising dominates
# the evaluation); "long" trains SAEs and priors properly and sweeps more.
SCALES = {
    "quick": DemoScale(
        4_000,
        1_000,
        64,
        8.0,
        128,
        4,
        8,
        eval_settings=dict(
            sae_train={"steps": 50, "batch_size": 512},
            n_fd_samples=300,
            n_bootstrap=200,
            steer_curve_scales=(0.25,),
            steer_curve_concepts=1,
            steer_curve_tokens=8,
        ),
    ),
    "default": DemoScale(
        100_000,
        8_000,
        128,
        130.0,
        512,
        8,
        24,
        eval_settings=dict(
            max_train_rows=60_000,
            sae_train={"steps": 600, "batch_size": 512},
            n_fd_samples=1500,
            steer_curve_scales=(0.05, 0.1, 0.25),
            steer_curve_concepts=2,
            steer_curve_tokens=10,
        ),
    ),
    "long": DemoScale(
        400_000,
        16_000,
        128,
        900.0,
        1024,
        128,
        40,
        eval_settings=dict(
            max_train_rows=200_000,
            ts=(0.25, 0.5, 0.75),
            sae_train={"steps": 3000, "batch_size": 1024},
            n_fd_samples=12_000,
            steer_curve_scales=(0.02, 0.05, 0.1, 0.25, 0.5),
            steer_curve_concepts=3,
            steer_curve_prompts=3,
            steer_curve_tokens=24,
        ),
    ),
}


def is_quick() -> bool:
    return os.environ.get(QUICK_ENV_VAR, "") not in ("", "0", "false", "False")


def stage(message: str) -> None:
    print(f"\n=== {message}", flush=True)


def capture_corpus(
    model, split: str, n_activations: int, ctx: int, hook: str = DEFAULT_HOOK, batch_size: int = 16
) -> tuple[ActivationRingBuffer, ActivationCapture, float]:
    """Fill a buffer with ``n_activations`` rows of ``split`` text; returns it, its capture and
    the seconds it took."""
    source = corpus_token_source(model.tokenizer, split=split, batch_size=batch_size, ctx=ctx)
    buffer = ActivationRingBuffer(n_activations, model.cfg.d_model, [hook], model_device(model))
    capture = ActivationCapture(model, hook, buffer, CaptureConfig())
    start = time.perf_counter()
    fill_buffer(model, source, hook, n_activations, buffer=buffer, capture=capture)
    return buffer, capture, time.perf_counter() - start


def build_priors(model, hook: str = DEFAULT_HOOK) -> dict[str, DiffusionPrior]:
    """Both designs at their CPU defaults, for ``model``'s ``hook``."""
    common = dict(d_model=model.cfg.d_model, hook_name=hook, model_name=model.cfg.model_name)
    return {
        "mlp": MLPPrior(MLPPriorConfig(**common)),
        "unet": UNetPrior(UNetPriorConfig.preset("cpu", **common)),
    }


def calibrate_steps(prior: DiffusionPrior, buffer, batch_size: int, seconds: float) -> int:
    """Training steps that fit in ``seconds``, from timing a few steps on a throwaway copy."""
    import copy

    probe = copy.deepcopy(prior)
    probe.set_normalization(buffer.mean(0), buffer.var(0))
    optimizer = torch.optim.AdamW(probe.parameters(), lr=1e-4)
    generator = torch.Generator(device=buffer.device).manual_seed(0)
    timings = []
    for _ in range(4):
        start = time.perf_counter()
        loss = probe.loss(buffer.sample(batch_size, generator=generator, hook=0))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        timings.append(time.perf_counter() - start)
    per_step = sorted(timings[1:])[len(timings[1:]) // 2]
    return max(10, int(seconds / per_step))


def train_demo_prior(
    name: str,
    prior: DiffusionPrior,
    buffer: ActivationRingBuffer,
    val_acts: torch.Tensor,
    scale: DemoScale,
    out: Path,
) -> TrainResult:
    steps = calibrate_steps(prior, buffer, scale.batch_size, scale.train_seconds)
    config = TrainConfig(
        steps=steps,
        batch_size=scale.batch_size,
        lr=PRIOR_PRESETS[prior.config.architecture]["cpu"]["lr"],
        eval_every=max(1, steps // 4),
        log_every=max(1, steps // 50),
        val_size=min(len(val_acts), 4096),
        checkpoint_every=max(1, steps // 2),
        checkpoint_dir=str(out / "runs" / name),
        time_budget_s=scale.train_seconds * 1.3,
    )
    print(f"{name}: {prior.num_parameters:,} parameters, {steps} steps of {scale.batch_size}")
    result = train_prior(prior, buffer, config, val_activations=val_acts, resume=False)
    print(
        f"{name}: val loss {result.initial_val_loss:.4f} -> {result.final_val_loss:.4f} vs "
        f"Gaussian reference {result.gaussian_reference:.4f} (ratio "
        f"{result.val_over_reference:.3f}); "
        f"{result.samples_per_s:,.0f} samples/s"
    )
    prior.save_pretrained(out / "priors" / name)
    return result


def demo_eval_settings(scale: DemoScale):
    """Evaluation settings sized to the demo's time budget (see ``EvalSettings`` for each knob)."""
    from tl_diffusion_prior.evaluate.settings import EvalSettings

    values = dict(
        max_sequences=scale.eval_sequences,
        seq_len=scale.ctx,
        max_train_rows=scale.n_train,
        prior_num_steps=20,
        ts=(0.5,),
        sae_sizes=((4, 32), (4, 64)),
        fd_sample_steps=20,
        n_bootstrap=1000,
        steer_curve_prompts=2,
    )
    values.update(scale.eval_settings)
    return EvalSettings.quick(**values)


def evaluate_demo(model, priors: dict, buffer, scale: DemoScale, out: Path) -> dict:
    """Fit the baselines on the training buffer, measure everything, write the report folder."""
    from tl_diffusion_prior.evaluate.report import run_evaluation, write_report

    settings = demo_eval_settings(scale)
    report = run_evaluation(
        model,
        list(priors.values()),
        buffer,
        settings,
        prior_names=list(priors),
        prior_dirs=[out / "priors" / name for name in priors],
    )
    paths = write_report(report, out)
    print((out / "report.md").read_text() if (out / "report.md").exists() else paths)
    return {"targets": report.targets, "report": {k: str(v) for k, v in paths.items()}}


STEER_EXAMPLE = dict(
    positive=["I am so happy and grateful today!", "What a wonderful, joyful celebration."],
    negative=["I am so sad and miserable today.", "What a terrible, gloomy funeral."],
    prompt="Tell me about your weekend.",
    concept="happy,joy,wonderful,love",
)


# A gentle and a strong relative scale. SmolLM2-135M at layer 15 is fragile: steering every
# position by 10% of the mean activation norm already turns greedy text into repetition, and at
# 0.25 into junk tokens, so the gentle scale is 0.05.
STEER_EXAMPLE_SCALES = (0.05, 0.25)


def steer_example(prior_dir: Path, scale: DemoScale, r: float) -> None:
    from tl_diffusion_prior.steer_cli import add_steer_arguments, run_steer

    parser = argparse.ArgumentParser()
    add_steer_arguments(parser)
    argv = ["--prior", str(prior_dir), "--prompt", STEER_EXAMPLE["prompt"], "--scale", str(r)]
    for text in STEER_EXAMPLE["positive"]:
        argv += ["--positive", text]
    for text in STEER_EXAMPLE["negative"]:
        argv += ["--negative", text]
    argv += ["--concept", STEER_EXAMPLE["concept"], "--max-new-tokens", str(scale.max_new_tokens)]
    run_steer(parser.parse_args(argv))


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="a small smoke test (a few minutes)")
    size.add_argument("--long", action="store_true", help="more data and training (~1 hour)")
    parser.add_argument("--out", default="reports/demo", help="report folder")
    parser.add_argument("--device", default=None)


def run_demo(args) -> int:
    from tl_diffusion_prior.offline_model import load_default_model

    scale = SCALES["quick" if args.quick or is_quick() else "long" if args.long else "default"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    summary: dict = {"scale": asdict(scale)}

    stage("1/5 loading SmolLM2-135M-Instruct offline")
    start = time.perf_counter()
    model = load_default_model(device=args.device)
    summary["load_s"] = time.perf_counter() - start
    print(f"loaded in {summary['load_s']:.1f} s")

    stage(f"2/5 capturing {scale.n_train:,} + {scale.n_val:,} activations at {DEFAULT_HOOK}")
    from tl_diffusion_prior.cli import describe_capture

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

    stage("4/5 evaluating against PCA, Gaussian-posterior and TopK-SAE baselines")
    summary["evaluation"] = evaluate_demo(model, priors, buffer, scale, out)

    stage("5/5 steering one example: unsteered | steered | steered + MLP prior")
    for r in STEER_EXAMPLE_SCALES:
        steer_example(out / "priors" / "mlp", scale, r)

    summary["total_s"] = time.perf_counter() - started
    (out / "demo_summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print(f"\ndone in {summary['total_s'] / 60:.1f} min; report folder: {out}")
    return 0
