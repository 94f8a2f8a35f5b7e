import pytest
import torch

from tl_diffusion_prior.core.normalizer import Normalizer
from tl_diffusion_prior.evaluate.baselines import GaussianBaseline, fit_normalizer
from tl_diffusion_prior.evaluate.ood import (
    KNNDistance,
    mahalanobis_distance,
    noise_rows,
    reconstruction_error,
    shift_aurocs,
    steer_rows,
)


def _rows(n, d=6, seed=0):
    gen = torch.Generator().manual_seed(seed)
    mixing = torch.randn(d, d, generator=gen)
    return torch.randn(n, d, generator=gen) @ mixing + 3.0


def test_mahalanobis_matches_the_inverse_covariance_formula():
    train = _rows(2000)
    gaussian = GaussianBaseline.fit(train, fit_normalizer(train))
    x = _rows(5, seed=1)
    z = gaussian.normalizer.normalize(x).double()
    centred = z - gaussian.mean
    covariance = (gaussian.eigenvectors * gaussian.eigenvalues) @ gaussian.eigenvectors.T
    expected = (centred @ torch.linalg.inv(covariance) * centred).sum(-1)
    assert torch.allclose(mahalanobis_distance(gaussian, x).double(), expected, rtol=1e-4)
    # Further from the training cloud: larger distance.
    far = x + 10 * x.std(0)
    assert (mahalanobis_distance(gaussian, far) > mahalanobis_distance(gaussian, x)).all()


def test_knn_distance_is_the_mean_of_the_k_smallest():
    train = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [5.0, 5.0]])
    normalizer = Normalizer(2, eps=1e-12)
    normalizer.set_stats(torch.zeros(2), torch.ones(2))
    knn = KNNDistance(train, normalizer, k=2, chunk_size=1)
    got = knn(torch.tensor([[0.0, 0.0], [5.0, 5.0]]))
    # (0,0): neighbours at 0 and 1 -> 0.5; (5,5): at 0 and sqrt(25+9) -> sqrt(34) / 2.
    assert got.tolist() == pytest.approx([0.5, 34**0.5 / 2], rel=1e-5)
    with pytest.raises(ValueError, match="at least k"):
        KNNDistance(train, normalizer, k=5)


def test_reconstruction_error_is_zero_for_a_perfect_reconstruction():
    normalizer = Normalizer(3, eps=1e-12)
    normalizer.set_stats(torch.zeros(3), torch.tensor([1.0, 4.0, 9.0]))

    class Halving:
        def reconstruct(self, x):
            return x / 2

    class Identity:
        def reconstruct(self, x):
            return x

    x = torch.tensor([[2.0, 4.0, 6.0]])
    assert reconstruction_error(Identity(), normalizer, x).item() == 0.0
    # Errors (1, 2, 3) divided by stds (1, 2, 3): 1 per dimension.
    assert reconstruction_error(Halving(), normalizer, x).item() == pytest.approx(1.0)


def test_steering_and_noise_shifts():
    x = torch.zeros(4, 3)
    steered = steer_rows(x, torch.tensor([0.0, 3.0, 4.0]), scale=0.5, norm=10.0)
    assert torch.allclose(steered, torch.tensor([0.0, 3.0, 4.0]).expand(4, 3))  # |delta| = 5
    with pytest.raises(ValueError, match="zero"):
        steer_rows(x, torch.zeros(3), 1.0, 1.0)
    normalizer = Normalizer(3, eps=1e-12)
    normalizer.set_stats(torch.zeros(3), torch.tensor([1.0, 100.0, 1e4]))
    noisy = noise_rows(torch.zeros(20000, 3), 0.5, normalizer, torch.Generator().manual_seed(0))
    assert noisy.std(0).tolist() == pytest.approx([0.5, 5.0, 50.0], rel=0.05)


def test_shift_table_ranks_a_separating_score_above_a_blind_one():
    clean_groups = torch.arange(50).repeat_interleave(4)
    gen = torch.Generator().manual_seed(0)
    clean = {"good": torch.randn(200, generator=gen), "blind": torch.randn(200, generator=gen)}
    shifted = {
        "noise": {
            "good": torch.randn(200, generator=gen) + 3,
            "blind": torch.randn(200, generator=gen),
        }
    }
    results = shift_aurocs(clean, clean_groups, shifted, {"noise": clean_groups}, n_resamples=200)
    by_name = {r.scorer: r for r in results}
    assert by_name["good"].auroc.low > 0.9
    assert by_name["blind"].auroc.low < 0.5 < by_name["blind"].auroc.high
    assert by_name["good"].shifted_mean > by_name["good"].clean_mean + 2
