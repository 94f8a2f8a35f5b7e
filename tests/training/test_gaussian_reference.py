import math

import numpy as np
import pytest
import torch

from tests.priors.helpers import build_tiny_prior
from tests.training.helpers import synthetic_activations, tiny_prior
from tl_diffusion_prior.training.gaussian_reference import (
    gaussian_reference,
    normalized_covariance_eigenvalues,
)


def test_eigenvalues_match_numpy_covariance_of_normalised_rows():
    prior = tiny_prior()
    x = synthetic_activations(500)
    prior.set_normalization(x.double().mean(0) + 0.3, x.double().var(0) * 2)
    eig, n = normalized_covariance_eigenvalues(prior, x, chunk_size=64)
    z = (x.double() - prior.normalizer.mean.double()) / prior.normalizer.std.double()
    expected = np.linalg.eigvalsh(np.cov(z.numpy().T, bias=True))
    assert n == 500 and eig.dtype == torch.float64
    np.testing.assert_allclose(eig.numpy(), expected, atol=1e-9)


def test_reference_for_whitened_gaussian_is_pi_over_two_for_the_mlp():
    prior = tiny_prior()
    x = torch.randn(20000, prior.config.d_model, generator=torch.Generator().manual_seed(0))
    prior.set_normalization(torch.zeros(8), torch.ones(8) - 1e-5)
    ref = gaussian_reference(prior, x)
    assert ref.n_rows == 20000
    assert ref.loss == pytest.approx(math.pi / 2, rel=0.02)


def test_bad_inputs():
    prior = tiny_prior()
    with pytest.raises(ValueError, match="width 6"):
        gaussian_reference(prior, torch.zeros(10, 6))
    with pytest.raises(ValueError, match="at least 2"):
        gaussian_reference(prior, torch.zeros(1, 8))


def test_held_out_reference_is_the_loss_of_the_fitted_linear_predictor():
    """A UNet whose output layer is zero is exactly its Gaussian skip: the optimal linear noise
    predictor for the rows it was fitted on. Its Monte-Carlo loss on other rows (here with a
    shifted mean and rescaled dims) matches the held-out reference, not the in-sample one."""
    d = 8
    prior = build_tiny_prior("unet", d_model=d, gaussian_skip=True, zero_init_output=True)
    gen = torch.Generator().manual_seed(0)
    mix = torch.randn(d, d, generator=gen) / math.sqrt(d)
    fit = torch.randn(20000, d, generator=gen) @ mix * torch.linspace(0.3, 3.0, d)
    held_out = (torch.randn(60000, d, generator=gen) @ mix) * torch.linspace(0.5, 2.0, d) + 0.3
    prior.set_normalization(fit.double().mean(0), fit.double().var(0))
    prior.fit_data(fit)
    with torch.no_grad():
        mc = prior.loss(held_out, generator=torch.Generator().manual_seed(1)).item()
    held_out_ref = gaussian_reference(prior, held_out, fit_activations=fit)
    in_sample = gaussian_reference(prior, held_out)
    assert held_out_ref.n_fit_rows == 20000 and held_out_ref.n_rows == 60000
    assert held_out_ref.loss == pytest.approx(mc, rel=0.02)
    assert in_sample.loss < 0.9 * held_out_ref.loss


def test_reference_fitted_and_scored_on_the_same_rows_is_the_in_sample_one():
    prior = tiny_prior()
    x = synthetic_activations(500)
    prior.set_normalization(x.double().mean(0), x.double().var(0))
    assert gaussian_reference(prior, x, fit_activations=x).loss == pytest.approx(
        gaussian_reference(prior, x).loss, rel=1e-9
    )


def test_stratified_noise_levels_make_the_validation_estimate_precise():
    """With evenly spread noise levels the loss of the fitted linear predictor (a zero-output
    UNet on its Gaussian skip) sits within a fraction of a percent of its closed form."""
    d = 64
    prior = build_tiny_prior("unet", d_model=d, gaussian_skip=True, zero_init_output=True)
    gen = torch.Generator().manual_seed(3)
    mix = torch.randn(d, d, generator=gen) / math.sqrt(d)
    rows = torch.randn(20000, d, generator=gen) @ mix * torch.linspace(0.3, 3.0, d)
    fit, held_out = rows[:12000], rows[12000:]
    prior.set_normalization(fit.double().mean(0), fit.double().var(0))
    prior.fit_data(fit)
    reference = gaussian_reference(prior, held_out, fit_activations=fit).loss
    levels = (torch.randperm(8000, generator=gen).float() + 0.5) / 8000
    errors = {}
    with torch.no_grad():
        for name, kwargs in {"random": {}, "stratified": {"levels": levels}}.items():
            losses = [
                prior.loss(held_out, generator=torch.Generator().manual_seed(s), **kwargs).item()
                for s in range(3)
            ]
            errors[name] = max(abs(v / reference - 1) for v in losses)
    assert errors["stratified"] < 0.006
    assert errors["stratified"] < errors["random"] / 3


def test_levels_are_validated():
    prior = tiny_prior()
    x = synthetic_activations(4)
    prior.set_normalization(x.double().mean(0), x.double().var(0))
    with pytest.raises(ValueError, match=r"levels must be .* in \[0, 1\)"):
        prior.loss(x, levels=torch.ones(4))
    with pytest.raises(ValueError, match="shape"):
        prior.loss(x, levels=torch.zeros(3))
    fixed = torch.tensor([0.1, 0.4, 0.6, 0.9])
    a = prior.loss(x, generator=torch.Generator().manual_seed(0), levels=fixed)
    b = prior.loss(x, generator=torch.Generator().manual_seed(0), levels=fixed)
    assert torch.equal(a, b)
