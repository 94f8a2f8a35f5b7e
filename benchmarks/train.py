"""Training throughput and loss reached in a fixed wall-clock budget, for both priors' defaults.

Captures real SmolLM2 layer-15 activations once, then trains each prior (CPU defaults) for the same
number of seconds, one after the other, and prints parameters, samples/s, and the held-out loss
against each design's own Gaussian reference. Not a test: nothing asserts a speed.

    .venv/bin/python benchmarks/train.py --seconds 120 --n-train 60000
"""

from __future__ import annotations

import argparse
import platform
import tempfile
from datetime import date
from pathlib import Path

import torch
from benchmark_setup import add_data_arguments, model_and_activations

from tl_diffusion_prior.recipes import build_priors, calibrate_steps, train_demo_prior


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=120.0, help="training budget per prior")
    parser.add_argument("--batch-size", type=int, default=512)
    add_data_arguments(parser, n_train=60_000, n_val=4_000)
    args = parser.parse_args()

    model, scale, buffer, val_acts = model_and_activations(args, batch_size=args.batch_size)
    rows = []
    with tempfile.TemporaryDirectory() as out:
        for name, prior in build_priors(model).items():
            steps = calibrate_steps(prior, buffer, scale.batch_size, args.seconds)
            result = train_demo_prior(name, prior, buffer, val_acts, scale, Path(out), steps)
            rows.append((name, prior.num_parameters, result))

    print(
        f"\n{date.today()} | {platform.machine()} | torch threads {torch.get_num_threads()} | "
        f"{args.seconds:.0f} s per prior, batch {args.batch_size}, "
        f"{buffer.num_filled:,} activations"
    )
    print(
        f"{'prior':6s} {'params':>11s} {'samples/s':>10s} {'steps':>6s} {'val':>8s} "
        f"{'gauss ref':>9s} {'ratio':>6s}"
    )
    for name, params, r in rows:
        print(
            f"{name:6s} {params:11,d} {r.samples_per_s:10,.0f} {r.steps:6d} "
            f"{r.final_val_loss:8.4f} {r.gaussian_reference:9.4f} {r.val_over_reference:6.3f}"
        )


if __name__ == "__main__":
    main()
