import math

import pytest
import torch

from tl_diffusion_prior.priors import DiffusionPrior, MLPPriorConfig
from tl_diffusion_prior.priors.gaussian_skip import GaussianVelocityPredictor

from .helpers import build_tiny_prior


def gaussian_rows(n: int, d: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of N(mean, C) with a dense, badly conditioned C; returns (rows, eigenvalues)."""
    gen = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(d, d, generator=gen))
    eigvals = torch.logspace(-2, 1, d)
    mean = torch.randn(d, generator=gen)
    x = (torch.randn(n, d, generator=gen) * eigvals.sqrt()) @ basis.T + mean
    return x, eigvals


def test_velocity_is_the_per_direction_closed_form():
    d = 6
    skip = GaussianVelocityPredictor(d)
    lam = torch.tensor([0.01, 0.1, 0.5, 1.0, 2.0, 9.0])
    skip.eigvals.copy_(lam)
    skip.mean.copy_(torch.linspace(-1, 1, d))
    z, t = torch.randn(3, d), torch.tensor([0.3])
    y = z - (1 - t) * skip.mean
    expected = (t - (1 - t) * lam) / ((1 - t) ** 2 * lam + t**2) * y - skip.mean
    torch.testing.assert_close(skip(z, t), expected)


def test_fresh_mlp_prior_starts_at_its_gaussian_reference():
    # With the skip fitted and the network's output at zero, the prior IS the Gaussian denoiser:
    # its Monte-Carlo loss on Gaussian data matches the closed-form reference, while the same
    # network without the skip starts at 1 + E|z|^2 (far above it).
    x, _ = gaussian_rows(20_000, 16)
    losses = {}
    for skip in (True, False):
        prior = build_tiny_prior("mlp", d_model=16, gaussian_skip=skip)
        prior.set_normalization(torch.zeros(16), torch.ones(16))
        prior.fit_data(x)
        with torch.no_grad():
            losses[skip] = prior.loss(x, generator=torch.Generator().manual_seed(1)).item()
    eigvals = torch.linalg.eigvalsh(torch.cov(x.T))
    prior = build_tiny_prior("mlp", d_model=16)
    reference = prior.gaussian_reference_loss(eigvals)
    assert losses[True] == pytest.approx(reference, rel=0.03)
    assert losses[False] > 1.5 * reference


def test_skip_runs_in_float32_under_bf16_autocast():
    x, _ = gaussian_rows(4096, 16)
    prior = build_tiny_prior("mlp", d_model=16)
    prior.set_normalization(x.mean(0), x.var(0))
    prior.fit_data(x)
    z, t = torch.randn(8, 16), torch.full((1,), 0.4)
    expected = prior.network.gaussian(z, t)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = prior.network.gaussian(z, t)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected)


def test_skip_is_saved_and_priors_saved_before_it_load_without_it(tmp_path):
    x, _ = gaussian_rows(2048, 16)
    prior = build_tiny_prior("mlp", d_model=16)
    prior.set_normalization(x.mean(0), x.var(0))
    prior.fit_data(x)
    prior.save_pretrained(tmp_path / "p")
    loaded = DiffusionPrior.from_pretrained(tmp_path / "p")
    assert torch.equal(loaded.network.gaussian.eigvecs, prior.network.gaussian.eigvecs)
    old = prior.config.to_dict()
    del old["gaussian_skip"]
    assert not MLPPriorConfig.from_dict(old).gaussian_skip


def test_fit_data_needs_normalisation_first():
    prior = build_tiny_prior("mlp", d_model=16)
    with pytest.raises(ValueError, match="set_normalization"):
        prior.fit_data(torch.randn(10, 16))
    assert math.isfinite(prior.gaussian_reference_loss(torch.ones(16)))
