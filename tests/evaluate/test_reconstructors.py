import pytest
import torch

from tests.evaluate.helpers import correlated_gaussian, fitted_gaussian
from tests.priors.helpers import build_tiny_prior, randomize_
from tl_diffusion_prior.evaluate.baselines.base import fit_normalizer
from tl_diffusion_prior.evaluate.baselines.sae_training import SAETrainConfig, train_topk_sae
from tl_diffusion_prior.evaluate.reconstructors import (
    GaussianPosteriorReconstructor,
    IdentityReconstructor,
    PCAReconstructor,
    PriorReconstructor,
    Reconstructor,
    RoundTripReconstructor,
    SAEReconstructor,
    label,
    noise_std_to_t,
)

D = 24


@pytest.fixture(scope="module")
def x():
    return correlated_gaussian(600, D, seed=0)


@pytest.fixture(scope="module")
def gaussian(x):
    return fitted_gaussian(x)


@pytest.fixture
def prior():
    return randomize_(build_tiny_prior("mlp", d_model=D))


def test_every_adapter_satisfies_the_protocol(x, gaussian, prior):
    sae = train_topk_sae(x, fit_normalizer(x), 48, 4, SAETrainConfig(steps=2, batch_size=32))
    adapters = [
        IdentityReconstructor(),
        PCAReconstructor(gaussian, 4),
        SAEReconstructor(sae),
        GaussianPosteriorReconstructor(gaussian, 0.5, "sample"),
        PriorReconstructor(prior, 0.5, 3),
    ]
    batch = x[:10].reshape(2, 5, D)
    for adapter in adapters:
        assert isinstance(adapter, Reconstructor)
        for out in (
            adapter.reconstruct(batch, generator=torch.Generator().manual_seed(0)),
            adapter.restore(batch, 1.0, generator=torch.Generator().manual_seed(0)),
        ):
            assert out.shape == batch.shape and out.dtype == batch.dtype
    assert label(adapters[1]) == "PCA (k=4)"
    assert label(adapters[0]) == "identity"
    assert adapters[3].name == "Gaussian posterior sample"
    assert PriorReconstructor(prior, 0.5, 1).name == "mlp prior one-step"


def test_noise_std_maps_to_the_flow_level():
    assert noise_std_to_t(1.0) == 0.5
    assert noise_std_to_t(0.0) == 0.0
    assert noise_std_to_t(3.0) == pytest.approx(0.75)
    with pytest.raises(ValueError):
        noise_std_to_t(-1.0)


def test_prior_restore_is_denoise_from_the_matching_level_without_fresh_noise(x, prior):
    noisy = x[:8] + 1.0
    got = PriorReconstructor(prior, 0.25, 4).restore(noisy, 1.0)
    expected = prior.denoise(noisy, t_start=0.5, num_steps=4, noise=torch.zeros_like(noisy))
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert PriorReconstructor(prior, 0.25, 4).restore(noisy, 0.0).equal(noisy)


def test_prior_and_gaussian_reconstructions_use_the_generator_noise(x, gaussian, prior):
    batch = x[:8]
    eps = torch.randn(8, D, generator=torch.Generator().manual_seed(7))
    got = PriorReconstructor(prior, 0.5, 3).reconstruct(
        batch, generator=torch.Generator().manual_seed(7)
    )
    torch.testing.assert_close(got, prior.denoise(batch, 0.5, 3, noise=eps))
    got_g = GaussianPosteriorReconstructor(gaussian, 0.5).reconstruct(
        batch, generator=torch.Generator().manual_seed(7)
    )
    torch.testing.assert_close(got_g, gaussian.denoise(batch, 0.5, noise=eps))


def test_pca_and_sae_restore_reconstruct_the_noisy_input(x, gaussian):
    noisy = x[:5] * 1.1
    pca = PCAReconstructor(gaussian, 6)
    torch.testing.assert_close(pca.restore(noisy, 1.0), gaussian.project(noisy, 6))
    assert IdentityReconstructor().restore(noisy, 1.0).equal(noisy)
    full = PCAReconstructor(gaussian, D)
    torch.testing.assert_close(full.reconstruct(noisy), noisy, rtol=1e-5, atol=1e-4)


def test_invalid_arguments(gaussian, prior):
    with pytest.raises(ValueError, match="k must be"):
        PCAReconstructor(gaussian, 0)
    with pytest.raises(ValueError, match="mode"):
        GaussianPosteriorReconstructor(gaussian, 0.5, "median")
    with pytest.raises(ValueError, match="t_start"):
        PriorReconstructor(prior, 0.0)
    with pytest.raises(ValueError, match="num_steps"):
        PriorReconstructor(prior, 0.5, 0)
    with pytest.raises(TypeError):
        PCAReconstructor(prior, 3)


def test_round_trip_renoises_the_noisy_input_while_matched_t_adds_no_noise(x, prior):
    matched = PriorReconstructor(prior, 0.5, 3)
    round_trip = RoundTripReconstructor(matched)
    noisy = x[:8] + torch.randn(8, D, generator=torch.Generator().manual_seed(1))

    def run(method, seed):
        return method.restore(noisy, 1.0, generator=torch.Generator().manual_seed(seed))

    # Matched t starts from the noisy input itself: the generator plays no part.
    assert torch.equal(run(matched, 0), run(matched, 1))
    # The round trip draws fresh noise (so depends on the generator) and equals reconstruct.
    assert not torch.allclose(run(round_trip, 0), run(round_trip, 1))
    expected = matched.reconstruct(noisy, generator=torch.Generator().manual_seed(0))
    assert torch.equal(run(round_trip, 0), expected)
    assert round_trip.name == "mlp prior round trip" and round_trip.setting == matched.setting
