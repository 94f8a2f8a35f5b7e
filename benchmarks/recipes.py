"""Which training recipe learns most per CPU-minute: each trains the MLP prior for the same seconds.

Captures real SmolLM2 layer-15 activations of the packaged corpus once, then trains one recipe
after another for ``--seconds`` of wall-clock each (steps sized by timing a few steps of that
recipe, so every cosine schedule completes; the trainer's time budget is a safety stop), and
prints the held-out loss against the Gaussian reference, samples/s, and training throughput as a
fraction of this machine's large-matmul peak in the dtype the recipe computes in (measured in the
same run). Not a test: nothing asserts a speed.

    .venv/bin/python benchmarks/recipes.py --seconds 120 --n-train 120000
"""

from __future__ import annotations

import argparse
import platform
import time
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any

import torch
from benchmark_setup import add_data_arguments, model_and_activations

from tl_diffusion_prior.priors import MLPPrior, MLPPriorConfig
from tl_diffusion_prior.recipes import DEFAULT_HOOK, calibrate_steps
from tl_diffusion_prior.training import TrainConfig, train_prior
from tl_diffusion_prior.training.runtime import uses_bf16


@dataclass
class Recipe:
    """One row of the comparison: prior config fields and training config fields."""

    name: str
    prior: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    paper_sizes: bool = False


RECIPES = [
    Recipe("old default (fp32, no skip)", {"gaussian_skip": False}, {"autocast": "off"}),
    Recipe("bf16, no skip", {"gaussian_skip": False}, {"autocast": "bf16"}),
    Recipe("fp32, Gaussian skip", {}, {"autocast": "off"}),
    Recipe("bf16, Gaussian skip (default)", {}, {"autocast": "bf16"}),
    Recipe("bf16, skip, lr 3e-4", {}, {"autocast": "bf16", "lr": 3e-4}),
    Recipe("paper depth 3, bf16, skip", {}, {"autocast": "bf16"}, paper_sizes=True),
]


def matmul_peak_gflops(dtype: torch.dtype, n: int = 2048, repeats: int = 10) -> float:
    """GFLOP/s of an ``n x n`` matmul in ``dtype`` (median of ``repeats``)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        timings.append(time.perf_counter() - start)
    return 2 * n**3 / sorted(timings)[repeats // 2] / 1e9


def matmul_params(prior: MLPPrior) -> int:
    """Parameters in the per-sample matmuls (Linear weights outside the per-batch time MLP)."""
    return sum(
        m.weight.numel()
        for name, m in prior.network.named_modules()
        if isinstance(m, torch.nn.Linear) and not name.startswith("time_mlp")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=120.0, help="training budget per recipe")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--only", nargs="*", help="substrings of recipe names to run")
    add_data_arguments(parser, n_train=120_000, n_val=8_192)
    args = parser.parse_args()

    model, scale, buffer, val_acts = model_and_activations(args, batch_size=args.batch_size)
    common = dict(d_model=model.cfg.d_model, hook_name=DEFAULT_HOOK, model_name="SmolLM2")
    peaks = {"bf16": matmul_peak_gflops(torch.bfloat16), "fp32": matmul_peak_gflops(torch.float32)}
    rows = []
    for recipe in RECIPES:
        if args.only and not any(s in recipe.name for s in args.only):
            continue
        build = MLPPriorConfig.paper if recipe.paper_sizes else MLPPriorConfig
        prior = MLPPrior(build(**common, **recipe.prior))
        mode = recipe.train.get("autocast", "auto")
        steps = calibrate_steps(prior, buffer, args.batch_size, args.seconds, autocast=mode)
        config = TrainConfig(
            steps=steps,
            batch_size=args.batch_size,
            lr=1e-3,
            eval_every=max(1, steps // 4),
            log_every=max(1, steps // 20),
            val_size=len(val_acts),
            time_budget_s=1.5 * args.seconds,
            progress=False,
        )
        config = replace(config, **recipe.train)
        result = train_prior(prior, buffer, config, val_activations=val_acts, resume=False)
        dtype = "bf16" if uses_bf16(mode, torch.device("cpu")) else "fp32"
        achieved = 6 * matmul_params(prior) * result.samples_per_s / 1e9
        rows.append((recipe.name, prior.num_parameters, result, achieved / peaks[dtype], dtype))
        print(f"{recipe.name}: ratio {result.val_over_reference:.3f}", flush=True)

    print(
        f"\n{date.today()} | {platform.machine()} | torch threads {torch.get_num_threads()} | "
        f"{args.seconds:.0f} s per recipe, batch {args.batch_size}, {buffer.num_filled:,} "
        f"activations | matmul peak bf16 {peaks['bf16']:.0f}, fp32 {peaks['fp32']:.0f} GFLOP/s"
    )
    print("| recipe | params | samples/s | steps | held-out loss | Gaussian ref | ratio | peak |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, params, r, fraction, dtype in rows:
        print(
            f"| {name} | {params / 1e6:.1f}M | {r.samples_per_s:,.0f} | {r.steps} | "
            f"{r.final_val_loss:.4f} | {r.gaussian_reference:.4f} | "
            f"{r.val_over_reference:.3f} | {fraction:.0%} of {dtype} |"
        )


if __name__ == "__main__":
    main()
