"""Shared fixtures-as-functions for the evaluation tests: correlated Gaussian data, tiny
baselines and small evaluation settings."""

from __future__ import annotations

import torch
from torch import Tensor

from tl_diffusion_prior.evaluate.baselines.base import fit_normalizer
from tl_diffusion_prior.evaluate.baselines.gaussian import GaussianBaseline
from tl_diffusion_prior.evaluate.settings import EvalSettings


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


def small_eval_settings() -> EvalSettings:
    """Settings small enough for a test run on the tiny model (seq_len 12, one tiny SAE)."""
    return EvalSettings.quick(
        seq_len=12,
        batch_size=4,
        pca_ks=(4, 16, 999),
        sae_sizes=((2, 4),),
        sae_train={"steps": 5, "batch_size": 64},
        ts=(0.25, 0.5),
        prior_num_steps=2,
        n_fd_samples=100,
        fd_sample_steps=2,
        n_bootstrap=50,
    )
