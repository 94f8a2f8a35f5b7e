import pytest
import torch

from tl_diffusion_prior.evaluate.stats import bootstrap_ci


def test_interval_contains_the_mean_and_shrinks_with_n():
    gen = torch.Generator().manual_seed(0)
    widths = []
    for n in (50, 500, 5000):
        values = torch.randn(n, generator=gen, dtype=torch.float64) + 2.0
        ci = bootstrap_ci(values, n_resamples=1000)
        assert ci.low <= ci.mean <= ci.high
        assert ci.mean == pytest.approx(float(values.mean()))
        assert ci.n == n
        widths.append(ci.high - ci.low)
    assert widths[0] > 2.5 * widths[1] > 2.5 * 2.5 * widths[2] * 0.9
    # A 95% interval of the mean of N(2, 1) with n = 5000 has half-width about 1.96 / sqrt(5000).
    assert widths[2] == pytest.approx(2 * 1.96 / 5000**0.5, rel=0.2)


def test_constant_values_give_a_zero_width_interval():
    ci = bootstrap_ci([0.0] * 10)
    assert (ci.mean, ci.low, ci.high) == (0.0, 0.0, 0.0)


def test_grouping_resamples_clusters():
    # Two clusters of perfectly correlated values: clustering must widen the interval.
    values = torch.tensor([0.0] * 50 + [1.0] * 50)
    groups = torch.tensor([0] * 50 + [1] * 50)
    grouped = bootstrap_ci(values, groups=groups, n_resamples=500)
    plain = bootstrap_ci(values, n_resamples=500)
    assert grouped.n == 2 and plain.n == 100
    assert grouped.mean == pytest.approx(0.5)
    assert grouped.high - grouped.low > 2 * (plain.high - plain.low)


def test_weights_and_determinism():
    ci = bootstrap_ci([1.0, 3.0], weights=[3.0, 1.0], n_resamples=200, seed=3)
    assert ci.mean == pytest.approx(1.5)
    assert bootstrap_ci([1.0, 2.0, 5.0], seed=3) == bootstrap_ci([1.0, 2.0, 5.0], seed=3)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(values=[]), "empty"),
        (dict(values=[1.0, float("nan")]), "NaN"),
        (dict(values=[1.0], level=1.0), "level"),
        (dict(values=[1.0, 2.0], groups=[0]), "groups"),
        (dict(values=[1.0, 2.0], weights=[0.0, 0.0]), "weights"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        bootstrap_ci(**kwargs)
