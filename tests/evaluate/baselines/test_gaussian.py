import pytest
import torch

from tests.evaluate.helpers import correlated_gaussian, fitted_gaussian
from tl_diffusion_prior.evaluate.reconstructors import GaussianPosteriorReconstructor

D = 3


@pytest.fixture(scope="module")
def gaussian():
    return fitted_gaussian(correlated_gaussian(5000, D, seed=0))


def _cov(gaussian):
    v, lam = gaussian.eigenvectors, gaussian.eigenvalues
    return (v * lam) @ v.T


def _prior_samples(gaussian, n, seed):
    gen = torch.Generator().manual_seed(seed)
    xi = torch.randn(n, D, generator=gen, dtype=torch.float64)
    return gaussian.mean + xi @ torch.linalg.cholesky(_cov(gaussian)).T


def test_pca_with_all_components_restores_exactly():
    x = correlated_gaussian(400, 16, seed=1)
    g = fitted_gaussian(x)
    torch.testing.assert_close(g.project(x, 16), x, rtol=1e-5, atol=1e-4)
    errors = [float((g.project(x, k) - x).norm()) for k in (1, 4, 8, 12)]
    assert errors == sorted(errors, reverse=True)
    assert g.explained_variance(16) == pytest.approx(1.0)
    # Shape, dtype and device follow the input.
    batched = x[:12].reshape(3, 4, 16).double()
    out = g.project(batched, 4)
    assert out.shape == batched.shape and out.dtype == torch.float64


def test_fit_recovers_the_normalised_covariance():
    x = correlated_gaussian(5000, 5, seed=2)
    g = fitted_gaussian(x)
    z = g.normalizer.normalize(x).double()
    torch.testing.assert_close(_cov(g), torch.cov(z.T, correction=0), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(g.mean, z.mean(0), rtol=1e-6, atol=1e-6)
    assert (g.eigenvalues[:-1] >= g.eigenvalues[1:]).all()


@pytest.mark.parametrize("t", [0.2, 0.5, 0.8])
def test_posterior_mean_matches_monte_carlo(gaussian, t):
    # Importance-weight samples from the fitted Gaussian by the likelihood of a fixed z_t.
    xs = _prior_samples(gaussian, 400_000, seed=1)
    gen = torch.Generator().manual_seed(2)
    x0 = _prior_samples(gaussian, 3, seed=3)
    z_t = (1 - t) * x0 + t * torch.randn(3, D, generator=gen, dtype=torch.float64)
    expected = gaussian.posterior_mean_normalized(z_t, t)
    for i in range(3):
        log_w = -((z_t[i] - (1 - t) * xs).square().sum(1)) / (2 * t * t)
        w = torch.softmax(log_w, 0)
        mc_mean = (w[:, None] * xs).sum(0)
        mc_cov = (w[:, None] * (xs - mc_mean)).T @ (xs - mc_mean)
        torch.testing.assert_close(expected[i], mc_mean, rtol=0, atol=0.03)
        _, var = gaussian.posterior_coefficients(t)
        analytic_cov = (gaussian.eigenvectors * var) @ gaussian.eigenvectors.T
        torch.testing.assert_close(mc_cov, analytic_cov, rtol=0, atol=0.03)


def test_posterior_sample_has_the_posterior_mean_and_covariance(gaussian):
    t = 0.5
    z_t = torch.tensor([[0.3, -1.0, 0.5]], dtype=torch.float64).expand(100_000, D)
    gen = torch.Generator().manual_seed(0)
    samples = gaussian.posterior_sample_normalized(z_t, t, generator=gen)
    _, var = gaussian.posterior_coefficients(t)
    analytic_cov = (gaussian.eigenvectors * var) @ gaussian.eigenvectors.T
    torch.testing.assert_close(
        samples.mean(0), gaussian.posterior_mean_normalized(z_t[:1], t)[0], rtol=0, atol=0.01
    )
    torch.testing.assert_close(torch.cov(samples.T), analytic_cov, rtol=0, atol=0.01)


def test_limits_of_the_noise_level(gaussian):
    z = _prior_samples(gaussian, 5, seed=4)
    torch.testing.assert_close(gaussian.posterior_mean_normalized(z, 0.0), z)
    at_one = gaussian.posterior_mean_normalized(z, 1.0)
    torch.testing.assert_close(at_one, gaussian.mean.expand(5, D))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        gaussian.posterior_coefficients(1.5)


def test_restoration_is_the_posterior_mean_given_the_noisy_vector(gaussian):
    # E[x | y = x + s eps] = mu + Sigma (Sigma + s^2 I)^-1 (y - mu), computed directly.
    s = 1.0
    gen = torch.Generator().manual_seed(5)
    z = _prior_samples(gaussian, 8, seed=6)
    y = z + s * torch.randn(8, D, generator=gen, dtype=torch.float64)
    cov = _cov(gaussian)
    direct = gaussian.mean + (y - gaussian.mean) @ torch.linalg.solve(
        cov + s * s * torch.eye(D, dtype=torch.float64), cov
    )
    y_raw = gaussian.normalizer.denormalize(y.float())
    restored = GaussianPosteriorReconstructor(gaussian, 0.5).restore(y_raw, s)
    got = gaussian.normalizer.normalize(restored).double()
    torch.testing.assert_close(got, direct, rtol=0, atol=1e-4)


def test_samples_follow_the_fit(gaussian):
    samples = gaussian.sample(50_000, generator=torch.Generator().manual_seed(0))
    z = gaussian.normalizer.normalize(samples).double()
    torch.testing.assert_close(z.mean(0), gaussian.mean, rtol=0, atol=0.02)
    torch.testing.assert_close(torch.cov(z.T), _cov(gaussian), rtol=0, atol=0.03)


def test_denoise_validates_arguments(gaussian):
    x = torch.zeros(2, D)
    with pytest.raises(ValueError, match="mode"):
        gaussian.denoise(x, 0.5, mode="median")
    with pytest.raises(ValueError, match="d_model"):
        gaussian.project(torch.zeros(2, D + 1), 1)
    with pytest.raises(ValueError, match="k must be"):
        gaussian.project(x, D + 1)
