import pytest

from tl_diffusion_prior.evaluate.curves import (
    compare_at_distortions,
    compare_curves,
    interpolate_at,
    overlap_range,
    pareto_front,
)


def test_interpolation_is_linear_and_never_extrapolates():
    curve = [(0.4, 4.0), (0.1, 1.0), (0.2, 2.0)]  # unsorted on purpose
    assert interpolate_at(curve, 0.15) == pytest.approx(1.5)
    assert interpolate_at(curve, 0.3) == pytest.approx(3.0)
    assert interpolate_at(curve, 0.1) == pytest.approx(1.0)
    assert interpolate_at(curve, 0.4) == pytest.approx(4.0)
    assert interpolate_at(curve, 0.05) is None
    assert interpolate_at(curve, 0.5) is None
    assert interpolate_at([], 0.2) is None


def test_equal_distortion_points_are_averaged_and_nan_dropped():
    curve = [(0.2, 1.0), (0.2, 3.0), (0.4, 4.0), (float("nan"), 0.0)]
    assert interpolate_at(curve, 0.2) == pytest.approx(2.0)
    assert interpolate_at(curve, 0.3) == pytest.approx(3.0)


def test_compare_synthetic_curves_at_equal_distortion():
    # y = d^2 lies below y = d on (0, 1); PCA-like curve only covers [0.3, 0.9].
    prior = [(d / 10, (d / 10) ** 2) for d in range(1, 11)]
    pca = [(d / 10, d / 10) for d in range(3, 10)]
    assert overlap_range({"prior": prior, "pca": pca}) == pytest.approx((0.3, 0.9))
    table = compare_at_distortions({"prior": prior, "pca": pca}, [0.5, 0.95])
    assert table[0.5]["prior"] == pytest.approx(0.25)
    assert table[0.5]["pca"] == pytest.approx(0.5)
    assert table[0.95]["pca"] is None
    comparison = compare_curves(prior, pca, n_grid=7)
    assert comparison["n_compared"] == 7
    assert comparison["fraction_below"] == 1.0
    assert comparison["mean_ratio"] < 1.0
    reverse = compare_curves(pca, prior, n_grid=7)
    assert reverse["fraction_below"] == 0.0


def test_disjoint_curves_are_not_compared():
    comparison = compare_curves([(0.1, 1.0), (0.2, 1.0)], [(0.5, 1.0), (0.6, 1.0)])
    assert comparison["range"] is None and comparison["fraction_below"] is None


def test_pareto_front():
    # (concept, nll): higher concept better, lower NLL better.
    points = [(0.1, 2.0), (0.5, 2.5), (0.4, 3.0), (0.9, 4.0), (0.9, 5.0)]
    assert pareto_front(points, maximize=(True, False)) == [0, 1, 3]
    assert pareto_front(points, maximize=(True, True)) == [4]
