import math

import pytest
import torch

from tests.evaluate.helpers import correlated_gaussian
from tl_diffusion_prior.evaluate.baselines.base import fit_normalizer
from tl_diffusion_prior.evaluate.frechet import (
    GaussianMoments,
    frechet_distance,
    frechet_distance_from_moments,
    frechet_ratio_interval,
    frechet_table,
    sqrtm_psd,
)


def _random_cov(d: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=gen, dtype=torch.float64)
    return a @ a.T / d + 0.1 * torch.eye(d, dtype=torch.float64)


def _closed_form(mu1, c1, mu2, c2) -> float:
    # An independent route: the eigenvalues of the non-symmetric product C1 C2 are real and
    # non-negative, and tr((C1 C2)^1/2) is the sum of their square roots.
    eig = torch.linalg.eigvals(c1 @ c2).real.clamp_min(0)
    return float((mu1 - mu2).square().sum() + c1.trace() + c2.trace() - 2 * eig.sqrt().sum())


def test_sqrtm_psd_squares_back():
    c = _random_cov(6, 0)
    root = sqrtm_psd(c)
    torch.testing.assert_close(root @ root, c, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(root, root.T)


def test_fd_of_a_sample_against_itself_is_zero():
    x = correlated_gaussian(500, 8)
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-6)


def test_fd_of_two_samples_of_one_distribution_is_small():
    x = correlated_gaussian(20_000, 4, seed=0)
    y = x[torch.randperm(20_000)]
    assert frechet_distance(x, y) == pytest.approx(0.0, abs=1e-6)
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(20_000, 4, generator=gen)
    b = torch.randn(20_000, 4, generator=gen)
    assert frechet_distance(a, b) < 0.01


def test_fd_matches_closed_form_for_gaussians():
    d = 5
    mu1 = torch.arange(d, dtype=torch.float64)
    mu2 = -torch.ones(d, dtype=torch.float64)
    c1, c2 = _random_cov(d, 1), _random_cov(d, 2)
    got = frechet_distance_from_moments(GaussianMoments(mu1, c1, 1), GaussianMoments(mu2, c2, 1))
    assert got == pytest.approx(_closed_form(mu1, c1, mu2, c2), rel=1e-9)
    # Commuting (diagonal) covariances: sum of (sqrt(a) - sqrt(b))^2 plus the mean term.
    a, b = torch.tensor([1.0, 4.0, 9.0]), torch.tensor([4.0, 1.0, 9.0])
    zero = torch.zeros(3)
    diag = frechet_distance_from_moments(
        GaussianMoments(zero, torch.diag(a), 1), GaussianMoments(zero + 1, torch.diag(b), 1)
    )
    assert diag == pytest.approx(3.0 + 1.0 + 1.0 + 0.0, rel=1e-12)


def test_fd_from_samples_converges_to_closed_form():
    d, n = 3, 200_000
    c1, c2 = _random_cov(d, 3), _random_cov(d, 4)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=gen, dtype=torch.float64) @ torch.linalg.cholesky(c1).T
    y = torch.randn(n, d, generator=gen, dtype=torch.float64) @ torch.linalg.cholesky(c2).T + 1
    expected = _closed_form(
        torch.zeros(d, dtype=torch.float64), c1, torch.ones(d, dtype=torch.float64), c2
    )
    assert frechet_distance(x, y) == pytest.approx(expected, rel=0.02)


def test_moments_match_torch_cov_and_normalizer_is_applied():
    x = correlated_gaussian(3000, 6)
    moments = GaussianMoments.from_samples(x)
    torch.testing.assert_close(moments.cov, torch.cov(x.double().T, correction=0))
    normalizer = fit_normalizer(x)
    normalised = GaussianMoments.from_samples(x, normalizer)
    assert torch.allclose(normalised.cov.diagonal(), torch.ones(6, dtype=torch.float64), atol=1e-3)
    with pytest.raises(ValueError, match="at least 2"):
        GaussianMoments.from_samples(x[:1])


def test_frechet_table_floor_and_ratios():
    rows = correlated_gaussian(8000, 6, seed=0)
    train, heldout = rows[:4000], rows[4000:]
    normalizer = fit_normalizer(train)
    shifted = train[:1000] + 3.0
    floor, rows = frechet_table(
        {"same": train[1000:2000], "shifted": shifted},
        heldout,
        train,
        normalizer,
        generator=torch.Generator().manual_seed(0),
    )
    assert floor.n == 1000
    by_name = {r.name: r for r in rows}
    assert by_name["shifted"].normalized_ratio > 10
    assert by_name["same"].normalized_ratio < 5
    assert math.isclose(by_name["shifted"].raw_ratio, by_name["shifted"].raw / floor.raw)


def _ratio_setup():
    rows = correlated_gaussian(9000, 6, seed=1)
    train, heldout, same = rows[:3000], rows[3000:6000], rows[6000:]
    return train, heldout, same, fit_normalizer(train)


def test_ratio_interval_centres_on_the_tables_ratio_and_separates_a_shift():
    train, heldout, same, normalizer = _ratio_setup()
    shifted = same + 0.3
    _, rows = frechet_table({"same": same, "shifted": shifted}, heldout, train, normalizer)
    by_name = {r.name: r for r in rows}
    for name, candidate in (("same", same), ("shifted", shifted)):
        ci = frechet_ratio_interval(candidate, heldout, train, normalizer, n_resamples=100)
        assert ci.mean == pytest.approx(by_name[name].normalized_ratio, rel=1e-9)
        assert ci.low < ci.mean < ci.high
    same_ci = frechet_ratio_interval(same, heldout, train, normalizer, n_resamples=100)
    shifted_ci = frechet_ratio_interval(shifted, heldout, train, normalizer, n_resamples=100)
    # A sample of the held-out distribution is within its floor; a shifted one clearly is not.
    assert same_ci.low < 1.0 < same_ci.high
    assert shifted_ci.low > same_ci.high


def test_ratio_interval_resamples_correlated_held_out_rows_by_group():
    train, rows, same, normalizer = _ratio_setup()
    # 3000 held-out rows that are 60 groups of 50 near-copies: only 60 independent draws.
    heldout = rows[:60].repeat_interleave(50, 0) + 0.05 * torch.randn(3000, 6)
    groups = torch.arange(60).repeat_interleave(50)
    shifted = same + 0.3
    by_row = frechet_ratio_interval(shifted, heldout, train, normalizer, n_resamples=100)
    by_group = frechet_ratio_interval(shifted, heldout, train, normalizer, groups, n_resamples=100)
    assert by_group.mean == by_row.mean
    assert by_group.high - by_group.low > 2 * (by_row.high - by_row.low)


def test_ratio_interval_refuses_groups_of_the_wrong_length():
    train, heldout, same, normalizer = _ratio_setup()
    with pytest.raises(ValueError, match="one group per held-out row"):
        frechet_ratio_interval(same, heldout, train, normalizer, torch.zeros(5, dtype=torch.long))
