"""Shared fixtures-as-functions for the evaluation tests: correlated Gaussian data and tiny
baselines."""

from __future__ import annotations

import torch
from torch import Tensor

from tl_diffusion_prior.evaluate.baselines.base import fit_normalizer
from tl_diffusion_prior.evaluate.baselines.gaussian import GaussianBaseline


def correlated_gaussian(n: int, d: int, seed: int = 0, rank: int | None = None) -> Tensor:
    """``n`` rows with a non-trivial mean, unequal scales and correlations (low rank if asked)."""
    gen = torch.Generator().manual_seed(seed)
    mix = torch.randn(d, rank or d, generator=gen, dtype=torch.float64)
    scales = torch.linspace(0.2, 3.0, d, dtype=torch.float64)
    latent = torch.randn(n, rank or d, generator=gen, dtype=torch.float64)
    mean = 5 * torch.randn(d, generator=gen, dtype=torch.float64)
    x = latent @ mix.T * scales + mean
    if rank is not None:
        x = x + 0.05 * torch.randn(n, d, generator=gen, dtype=torch.float64)
    return x.float()


def fitted_gaussian(x: Tensor) -> GaussianBaseline:
    return GaussianBaseline.fit(x, fit_normalizer(x), hook_name="blocks.0.hook_resid_post")
