"""Which UNet design learns beyond its Gaussian skip at equal training time (issue 14's UNet item)?

The CPU UNet preset runs its convolutions on the full 24 x 24 grid of a 576-d activation and, after
10 minutes, ends 1% below its Gaussian reference. This script trains several ``diffusers``
UNet2D designs (DDPM, epsilon prediction, Gaussian skip, spectral layout) for the same wall-clock
on the same captured SmolLM2 layer-15 rows, next to the MLP prior for the same time, and reports
held-out loss over each one's own Gaussian reference and training samples per second. The designs
differ in ``patch_size`` (square patches of the grid become channels, so the UNet runs at a
coarser resolution with more channels), width and attention.

Four designs diagnose *why* the UNets stay at their reference. ``patch24`` runs the UNet on one
576-channel pixel, so no weight is shared between grid positions (its 3 x 3 convolutions act as
dense layers). ``patch12-scale-shift`` and ``patch24-scale-shift`` add diffusers' FiLM-style time
conditioning (``resnet_time_scale_shift="scale_shift"``: each ResNet's features are scaled and
shifted by the time embedding, like the MLP's time-scaled gates); ``patch24-one-group`` also
normalises all 256 channels together, as the MLP's LayerNorm does, instead of in groups of 32.
``--mlp-ddpm`` adds a prior that is not a UNet: the MLP prior's network trained on exactly the
UNet's objective (DDPM noise prediction, uniform integer timesteps, the same Gaussian skip; batch
and learning rate as the MLP), so the network is the only thing that differs from the UNets.

It also scores the MLP priors (the one trained here, and the shipped one, trained for hours) on the
UNet's objective: converted from velocity to noise prediction, under the same DDPM loss on the
same held-out rows. A flow state ``(1 - t) x + t eps`` is the DDPM state
``sqrt(ab) x + sqrt(1 - ab) eps`` divided by ``sqrt(ab) + sqrt(1 - ab)``, at
``t = sqrt(1 - ab) / (sqrt(ab) + sqrt(1 - ab))``, and ``eps = z_t + (1 - t) v``. Their ratios
to the Gaussian predictor's loss say how far below the reference a denoiser gets on this data
under this objective, at the same budget and after hours.

    .venv/bin/python benchmarks/unet_design.py --seconds 300
    .venv/bin/python benchmarks/unet_design.py --seconds 600 --designs cpu patch4
    .venv/bin/python benchmarks/unet_design.py --seconds 300 \
        --designs patch12-scale-shift --mlp-ddpm
    .venv/bin/python benchmarks/unet_design.py --seconds 300 --batch-size 1024 --no-mlp \
        --designs patch24 patch24-scale-shift
    .venv/bin/python benchmarks/unet_design.py --seconds 300 --batch-size 1024 --no-mlp \
        --designs patch24-one-group
"""

from __future__ import annotations

import argparse
import math
import platform
import tempfile
from dataclasses import replace
from datetime import date
from pathlib import Path

import torch
from benchmark_setup import add_data_arguments, model_and_activations
from torch import nn

from tl_diffusion_prior.constants import DEFAULT_HOOK
from tl_diffusion_prior.priors import MLPPrior, MLPPriorConfig, UNetPrior, UNetPriorConfig
from tl_diffusion_prior.priors.default_prior import load_default_prior
from tl_diffusion_prior.priors.mlp import FlowMLP
from tl_diffusion_prior.recipes import PRIOR_PRESETS, calibrate_steps, train_demo_prior
from tl_diffusion_prior.training import FIT_ROWS


def _unet(channels: list[int], attention: bool, **overrides) -> dict:
    """UNet2DModel keyword arguments for ``channels`` (attention at the lowest resolution), with
    ``overrides`` (other UNet2DModel arguments) on top."""
    down = ["DownBlock2D"] * len(channels)
    up = ["UpBlock2D"] * len(channels)
    if attention and len(channels) > 1:
        down[-1], up[0] = "AttnDownBlock2D", "AttnUpBlock2D"
    unet = dict(
        block_out_channels=channels,
        down_block_types=down,
        up_block_types=up,
        norm_num_groups=8,
        add_attention=attention,
    )
    return {**unet, **overrides}


# diffusers' FiLM-style time conditioning: each ResNet's features scaled and shifted by the
# time embedding.
SCALE_SHIFT = {"resnet_time_scale_shift": "scale_shift"}


# key -> (label, UNetPriorConfig fields over the "cpu" preset)
DESIGNS: dict[str, tuple[str, dict]] = {
    "cpu": ("cpu preset (24x24, 16/32/64, attention)", {}),
    "patch4-attn": (
        "patch 4 (6x6, 64/128, attention)",
        dict(patch_size=4, unet=_unet([64, 128], True)),
    ),
    "patch4": (
        "patch 4 (6x6, 64/128, no attention)",
        dict(patch_size=4, unet=_unet([64, 128], False)),
    ),
    "patch12": (
        "patch 12 (2x2, 256, no attention)",
        dict(patch_size=12, unet=_unet([256], False)),
    ),
    "patch12-scale-shift": (
        "patch 12 (2x2, 256, no attention), time scale-shift",
        dict(patch_size=12, unet=_unet([256], False, **SCALE_SHIFT)),
    ),
    "patch24": (
        "patch 24 (1x1, 256, no attention)",
        dict(patch_size=24, unet=_unet([256], False)),
    ),
    "patch24-scale-shift": (
        "patch 24 (1x1, 256, no attention), time scale-shift",
        dict(patch_size=24, unet=_unet([256], False, **SCALE_SHIFT)),
    ),
    "patch24-one-group": (
        "patch 24 (1x1, 256, no attention), time scale-shift, GroupNorm of 1 group",
        dict(patch_size=24, unet=_unet([256], False, **SCALE_SHIFT, norm_num_groups=1)),
    ),
}


class MLPNoisePredictor(nn.Module):
    """The MLP prior's network as a DDPM noise predictor: ``FlowMLP(z_t, timestep / 1000)`` plus
    the UNet prior's Gaussian skip, for the ``mlp-ddpm`` diagnostic (not a shipped design)."""

    def __init__(self, names: dict, gaussian: nn.Module) -> None:
        super().__init__()
        self.mlp = FlowMLP(MLPPriorConfig(**names, gaussian_skip=False))
        self.gaussian = gaussian

    def forward(self, z_t: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        t = timesteps.float().reshape(-1) / 1000.0
        return self.mlp.velocity(z_t, t) + self.gaussian(z_t, timesteps)


def mlp_ddpm_prior(names: dict) -> UNetPrior:
    """A UNetPrior (DDPM objective, sampling, Gaussian skip) whose network is the MLP's."""
    prior = UNetPrior(UNetPriorConfig.preset("cpu", **names, layout="identity"))
    prior.network = MLPNoisePredictor(names, prior.network.gaussian)
    return prior


@torch.no_grad()
def ddpm_losses(
    mlp: MLPPrior, val_acts: torch.Tensor, fit_rows: torch.Tensor, names: dict
) -> tuple[float, float]:
    """(``mlp``'s DDPM noise-prediction loss, the Gaussian predictor's), in ``mlp``'s normalised
    space, with the same noise, every 50th timestep from 0 to 999 (stratified) over ``val_acts``."""
    ddpm = UNetPrior(UNetPriorConfig.preset("cpu", **names))
    ddpm.set_normalization(mlp.normalizer.mean.double(), mlp.normalizer.std.double() ** 2)
    ddpm.fit_data(fit_rows)  # the Gaussian skip = the optimal linear noise predictor
    z = mlp.normalizer.normalize(val_acts).float()
    generator = torch.Generator().manual_seed(0)
    mlp_loss = linear_loss = 0.0
    timesteps = list(range(0, 1000, 50)) + [999]
    for k in timesteps:
        ab = float(ddpm._alphas_cumprod[k])
        a, s = math.sqrt(ab), math.sqrt(1.0 - ab)
        eps = torch.randn(z.shape, generator=generator)
        x_k = a * z + s * eps
        t = s / (a + s)
        z_t = x_k / (a + s)
        v = mlp.network.velocity(z_t, torch.full((len(z),), t))
        mlp_loss += (z_t + (1.0 - t) * v - eps).square().mean().item()
        linear_loss += (ddpm.network.gaussian(x_k, torch.tensor(k)) - eps).square().mean().item()
    return mlp_loss / len(timesteps), linear_loss / len(timesteps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=300.0, help="training budget per prior")
    parser.add_argument("--batch-size", type=int, default=256, help="the UNets' batch")
    parser.add_argument("--unet-lr", type=float, default=PRIOR_PRESETS["unet"]["cpu"]["lr"])
    parser.add_argument("--mlp-batch-size", type=int, default=1024)
    parser.add_argument("--no-mlp", action="store_true", help="leave the MLP prior out")
    parser.add_argument(
        "--designs", nargs="+", choices=sorted(DESIGNS), default=list(DESIGNS), help="UNets"
    )
    parser.add_argument(
        "--mlp-ddpm",
        action="store_true",
        help="also train the MLP's network on the UNet's DDPM objective (batch --mlp-batch-size)",
    )
    add_data_arguments(parser, n_train=120_000, n_val=8_000)
    args = parser.parse_args()

    model, scale, buffer, val_acts = model_and_activations(args, batch_size=args.batch_size)
    names = dict(d_model=model.cfg.d_model, hook_name=DEFAULT_HOOK, model_name=model.cfg.model_name)
    rows = []
    with tempfile.TemporaryDirectory() as out:
        for index, key in enumerate(args.designs):
            label, fields = DESIGNS[key]
            torch.manual_seed(0)
            prior = UNetPrior(UNetPriorConfig.preset("cpu", **names, **fields))
            steps = calibrate_steps(prior, buffer, scale.batch_size, args.seconds)
            result = train_demo_prior(
                f"unet{index}",
                prior,
                buffer,
                val_acts,
                scale,
                Path(out) / str(index),
                steps,
                lr=args.unet_lr,
            )
            rows.append((f"UNet {label}, lr {args.unet_lr:g}", prior.num_parameters, result))
        if args.mlp_ddpm:
            torch.manual_seed(0)
            prior = mlp_ddpm_prior(names)
            mlp_scale = replace(scale, batch_size=args.mlp_batch_size)
            steps = calibrate_steps(prior, buffer, mlp_scale.batch_size, args.seconds)
            result = train_demo_prior(
                "mlp-ddpm",
                prior,
                buffer,
                val_acts,
                mlp_scale,
                Path(out) / "mlp-ddpm",
                steps,
                lr=PRIOR_PRESETS["mlp"]["cpu"]["lr"],
            )
            rows.append(("MLP network on the UNet's DDPM objective", prior.num_parameters, result))
        scored = {
            "the shipped MLP prior (trained for hours)": load_default_prior(dtype=torch.float32)
        }
        if not args.no_mlp:
            torch.manual_seed(0)
            mlp = MLPPrior(MLPPriorConfig(**names))
            mlp_scale = replace(scale, batch_size=args.mlp_batch_size)
            steps = calibrate_steps(mlp, buffer, mlp_scale.batch_size, args.seconds)
            result = train_demo_prior(
                "mlp", mlp, buffer, val_acts, mlp_scale, Path(out) / "mlp", steps
            )
            rows.append(("MLP prior, default config (its flow loss)", mlp.num_parameters, result))
            scored[f"MLP prior trained here for {args.seconds:.0f} s"] = mlp.float().eval()

    generator = torch.Generator(device=buffer.device).manual_seed(0)
    fit_rows = buffer.sample(FIT_ROWS, generator=generator, hook=0)
    ddpm = {name: ddpm_losses(p, val_acts[:4096], fit_rows, names) for name, p in scored.items()}

    print(
        f"\n{date.today()} | {platform.machine()} | torch threads {torch.get_num_threads()} | "
        f"{args.seconds:.0f} s per prior, batch {args.batch_size} (MLP {args.mlp_batch_size}), "
        f"{buffer.num_filled:,} training "
        f"and {len(val_acts):,} held-out activations"
    )
    print("| prior | parameters | steps | samples/s | held-out loss / Gaussian reference |")
    print("|---|---:|---:|---:|---:|")
    for label, params, result in rows:
        print(
            f"| {label} | {params / 1e6:.2f}M | {result.steps} | {result.samples_per_s:,.0f} | "
            f"{result.val_over_reference:.3f} |"
        )
    print(
        "\nThe MLP priors under the UNet's DDPM noise-prediction loss (4,096 held-out rows, 21 "
        "timesteps), against the Gaussian predictor's:"
    )
    for name, (loss, linear) in ddpm.items():
        print(f"- {name}: {loss:.4f} against {linear:.4f} (ratio {loss / linear:.3f})")


if __name__ == "__main__":
    main()
