import math

import pytest
import torch

from tests.priors.helpers import build_tiny_prior, randomize_, single_thread, train_on_manifold
from tl_diffusion_prior.priors.score import ScoreConfig, ScoreNoise

ARCHITECTURES = ["mlp", "unet"]


def _rows(n=4, d=24, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed)) * 2 + 1


@pytest.fixture(scope="module")
def trained():
    return train_on_manifold()


def _auroc(low, high):
    """P(a random ``high`` score exceeds a random ``low`` one)."""
    return float((high[None, :] > low[:, None]).float().mean())


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_score_is_deterministic_given_the_seed(architecture):
    prior = randomize_(build_tiny_prior(architecture)).eval()
    x = _rows()
    first = prior.score(x, seed=3)
    assert first.shape == (4,) and first.dtype == torch.float32
    assert torch.equal(prior.score(x, seed=3), first)
    assert not torch.allclose(prior.score(x, seed=4), first)
    assert bool((first > 0).all())


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_score_of_a_vector_does_not_depend_on_the_rest_of_the_batch(architecture):
    prior = randomize_(build_tiny_prior(architecture)).eval()
    x, others = _rows(), _rows(3, seed=1)
    batched = prior.score(x)
    alone = torch.stack([prior.score(row[None])[0] for row in x])
    mixed = prior.score(torch.cat([others, x.flip(0)]))[len(others) :].flip(0)
    torch.testing.assert_close(alone, batched, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(mixed, batched, rtol=1e-5, atol=1e-6)
    # Leading dims are kept, and a reshaped batch scores the same.
    torch.testing.assert_close(prior.score(x.reshape(2, 2, 24)), batched.reshape(2, 2))


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_one_network_evaluation_per_level(architecture):
    prior = randomize_(build_tiny_prior(architecture)).eval()
    calls = []
    handle = prior.network.register_forward_hook(lambda *args: calls.append(1))
    try:
        prior.score(_rows(), levels=(0.1, 0.2, 0.4, 0.8))
        assert len(calls) == 4
        calls.clear()
        prior.score(_rows(), method="one_step")
        assert len(calls) == 1
    finally:
        handle.remove()


def test_score_is_the_noise_prediction_error_of_the_flow():
    """For rectified flow ``z_t = (1 - t) z + t eps``, ``eps_hat = z_t + (1 - t) v(z_t, t)``."""
    prior = randomize_(build_tiny_prior("mlp")).eval()
    x, levels = _rows(), (0.2, 0.6)
    config = ScoreConfig(levels=levels, seed=5)
    noise = ScoreNoise(config, 24).for_vectors(x)
    z = prior.normalizer.normalize(x)
    expected = torch.zeros(len(x))
    with torch.no_grad():
        for k, t in enumerate(levels):
            z_t = (1 - t) * z + t * noise[:, k]
            eps_hat = z_t + (1 - t) * prior.network.velocity(z_t, torch.tensor([t]))
            expected += (noise[:, k] - eps_hat).square().mean(-1) / len(levels)
    torch.testing.assert_close(prior.score(x, levels=levels, seed=5), expected)
    torch.testing.assert_close(prior.score(x, levels=levels, noise=noise), expected)
    assert not torch.allclose(prior.score(x, levels=levels, noise=noise.flip(0)), expected)


def test_off_manifold_activations_score_higher(trained):
    prior, manifold, data = trained
    gen = torch.Generator().manual_seed(7)
    on = manifold.sample(400, gen)
    gaussian = manifold.gaussian_fit_samples(data, 400, gen)  # same mean and covariance
    pushed = on + 0.3 * data.std(0) * torch.randn(on.shape, generator=gen)
    with single_thread():
        for method, least in (("elbo", 0.97), ("one_step", 0.95)):
            score_on = prior.score(on, method)
            assert _auroc(score_on, prior.score(gaussian, method)) > least, method
            assert _auroc(score_on, prior.score(pushed, method)) > least, method
        # The score orders off-manifold points by their distance to the manifold.
        distance = manifold.distance_to_manifold(gaussian)
        ranks = torch.stack(
            [distance.argsort().argsort(), prior.score(gaussian).argsort().argsort()]
        )
        assert torch.corrcoef(ranks.float())[0, 1] > 0.3


def test_seed_to_seed_spread_is_small_against_the_off_manifold_gap(trained):
    prior, manifold, data = trained
    on = manifold.sample(200, torch.Generator().manual_seed(8))
    with single_thread():
        scores = torch.stack([prior.score(on, seed=s) for s in range(8)])
    gaussian = manifold.gaussian_fit_samples(data, 200, torch.Generator().manual_seed(9))
    gap = prior.score(gaussian).mean() - scores.mean()
    assert float(scores.std(0).mean()) < 0.5 * float(gap)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(method="exact"), ValueError, "method must be one of"),
        (dict(method="ode", levels=(0.5,)), ValueError, "levels=None"),
        (dict(levels=(0.0, 0.5)), ValueError, "levels"),
        (dict(levels=(0.5, 1.0)), ValueError, "levels"),
        (dict(levels=()), ValueError, "at least one"),
        (dict(method="one_step", levels=(0.1, 0.2)), ValueError, "one noise level"),
        (dict(seed=-1), ValueError, "seed"),
        (dict(noise=torch.zeros(4, 2, 24)), ValueError, r"noise must have shape \(4, 3, 24\)"),
    ],
)
def test_bad_arguments_are_refused_before_any_evaluation(kwargs, error, match):
    prior = build_tiny_prior("mlp")
    with pytest.raises(error, match=match):
        prior.score(_rows(), **kwargs)


def test_ode_score_is_the_exact_likelihood_of_a_gaussian_prior():
    """A fresh MLP prior with the Gaussian skip is exactly the fitted Gaussian's flow (its network
    output starts at zero), so its ODE likelihood must match the Gaussian's density."""
    gen = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(8, 8, generator=gen))
    eigenvalues = torch.linspace(0.3, 2.0, 8)
    x = (torch.randn(4000, 8, generator=gen) * eigenvalues.sqrt()) @ q.T * 3 + 5
    prior = build_tiny_prior("mlp", d_model=8)
    prior.set_normalization(x.double().mean(0), x.double().var(0))
    prior.fit_data(x)
    fit = prior.network.gaussian
    z = prior.normalizer.normalize(x[:400])
    coords = (z - fit.mean) @ fit.eigvecs
    exact = (
        (coords.square() / fit.eigvals).sum(-1)
        + fit.eigvals.log().sum()
        + 8 * math.log(2 * math.pi)
    )
    exact = exact / 16  # -log N(z) per dimension
    ode = prior.score(x[:400], ScoreConfig("ode", ode_steps=32))
    assert abs(float(ode.mean() / exact.mean()) - 1) < 0.02
    assert torch.corrcoef(torch.stack([ode, exact]))[0, 1] > 0.8
    assert torch.equal(prior.score(x[:400], ScoreConfig("ode", ode_steps=32)), ode)


def test_ode_score_is_higher_off_manifold_and_needs_a_flow_prior(trained):
    prior, manifold, data = trained
    gen = torch.Generator().manual_seed(7)
    on, gaussian = manifold.sample(200, gen), manifold.gaussian_fit_samples(data, 200, gen)
    with single_thread():
        config = ScoreConfig("ode", ode_steps=16)
        assert _auroc(prior.score(on, config), prior.score(gaussian, config)) > 0.95
    with pytest.raises(ValueError, match="flow-matching"):
        build_tiny_prior("unet").score(_rows(), "ode")
    with pytest.raises(ValueError, match="inside the ScoreConfig"):
        prior.score(on, config, seed=3)


def test_config_needs_a_sequence_of_levels():
    with pytest.raises(TypeError):  # the type checker or our own check, whichever runs first
        ScoreConfig(levels=0.5)
    assert ScoreConfig(levels=[0.2, 0.3]).levels == (0.2, 0.3)
    assert ScoreConfig(method="one_step").levels == (0.25,)


def test_wrong_width_is_refused():
    with pytest.raises(ValueError, match="d_model=24"):
        build_tiny_prior("mlp").score(torch.zeros(3, 16))
