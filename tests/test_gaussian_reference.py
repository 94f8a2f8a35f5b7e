import math

import numpy as np
import pytest
import torch
from training_helpers import synthetic_activations, tiny_prior

from tl_diffusion_prior.gaussian_reference import (
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
