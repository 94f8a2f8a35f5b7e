"""Which grid layout lets the UNet prior denoise better at equal training time?

Activation dimensions have no spatial order, so the write-up's reshape (``layout="identity"``)
gives the 3x3 convolutions arbitrary neighbourhoods; ``layout="spectral"`` places correlated
dimensions next to each other. This captures SmolLM2 layer-15 activations once, trains the CPU
UNet preset with each layout for the same wall-clock budget (same data, seed and optimiser), and
scores each on held-out rows:

* the validation loss over the held-out Gaussian reference;
* denoising from ``t = 0.5``: relative error (normalised space) of the one-step posterior-mean
  estimate and of the 20-step DDIM reconstruction, with the same noise for every prior, next to
  the untrained prior (its Gaussian skip alone: the best linear denoiser).

    .venv/bin/python benchmarks/unet_layout.py --seconds 150
"""

from __future__ import annotations

import argparse
import copy
import platform
import tempfile
from datetime import date
from pathlib import Path

import torch
from benchmark_setup import add_data_arguments, model_and_activations

from tl_diffusion_prior.constants import DEFAULT_HOOK
from tl_diffusion_prior.priors import UNetPrior, UNetPriorConfig
from tl_diffusion_prior.recipes import calibrate_steps, train_demo_prior
from tl_diffusion_prior.training import FIT_ROWS


def relative_error(prior: UNetPrior, clean: torch.Tensor, denoised: torch.Tensor) -> float:
    a, b = prior.normalizer.normalize(clean), prior.normalizer.normalize(denoised)
    return float((a - b).norm(dim=-1).mean() / a.norm(dim=-1).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=150.0, help="training budget per layout")
    parser.add_argument("--n-denoise", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=256)
    add_data_arguments(parser, n_train=60_000, n_val=8_000)
    args = parser.parse_args()

    model, scale, buffer, val_acts = model_and_activations(args, batch_size=args.batch_size)
    clean = val_acts[: args.n_denoise]
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
    names = dict(d_model=model.cfg.d_model, hook_name=DEFAULT_HOOK, model_name=model.cfg.model_name)

    rows = []
    with tempfile.TemporaryDirectory() as out:
        for layout in ("identity", "spectral"):
            torch.manual_seed(0)
            prior = UNetPrior(UNetPriorConfig.preset("cpu", layout=layout, **names))
            steps = calibrate_steps(prior, buffer, scale.batch_size, args.seconds)
            result = train_demo_prior(
                f"unet-{layout}", prior, buffer, val_acts, scale, Path(out) / layout, steps
            )
            if layout == "identity":
                # The same prior before any step: fit_data on the same rows, output layer zero.
                untrained = UNetPrior(UNetPriorConfig.preset("cpu", layout=layout, **names))
                untrained.set_normalization(buffer.mean(0), buffer.var(0))
                generator = torch.Generator().manual_seed(0)
                untrained.fit_data(buffer.sample(FIT_ROWS, generator=generator, hook=0))
                rows.append(("Gaussian skip only (untrained)", untrained, None))
            rows.append((f"{layout} layout", prior, result))

    print(
        f"\n{date.today()} | {platform.machine()} | torch threads {torch.get_num_threads()} | "
        f"{args.seconds:.0f} s per layout, batch {args.batch_size}, {buffer.num_filled:,} "
        f"activations; denoising {len(clean)} held-out rows from t = 0.5"
    )
    print(f"{'prior':32s} {'steps':>6s} {'val/ref':>8s} {'1-step err':>10s} {'20-step err':>11s}")
    for label, prior, result in rows:
        prior = copy.deepcopy(prior).eval()
        one = prior.denoise(clean, t_start=0.5, num_steps=1, noise=noise)
        twenty = prior.denoise(clean, t_start=0.5, num_steps=20, noise=noise)
        steps = f"{result.steps:6d}" if result else "     0"
        ratio = f"{result.val_over_reference:8.3f}" if result else "   1 (*)"
        print(
            f"{label:32s} {steps} {ratio} {relative_error(prior, clean, one):10.4f} "
            f"{relative_error(prior, clean, twenty):11.4f}"
        )
    print("(*) the skip alone is the Gaussian-optimal linear predictor: the reference by design.")


if __name__ == "__main__":
    main()
