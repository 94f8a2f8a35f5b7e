import pytest
import torch

from tl_diffusion_prior.evaluate.stats import bootstrap_ci, bootstrap_ratio_ci


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


def _correlated_pair(n: int = 200, seed: int = 0):
    """Two methods' per-window values: window difficulty shared, the first about half the second."""
    gen = torch.Generator().manual_seed(seed)
    difficulty = 0.2 + 2.0 * torch.rand(n, generator=gen, dtype=torch.float64)
    noise = 0.01 * torch.randn(n, generator=gen, dtype=torch.float64)
    return 0.5 * difficulty + noise, difficulty


def test_ratio_interval_is_the_ratio_of_the_means_and_tight_when_paired():
    numerator, denominator = _correlated_pair()
    ci = bootstrap_ratio_ci(numerator, denominator, n_resamples=1000)
    assert ci.mean == pytest.approx(float(numerator.mean() / denominator.mean()))
    assert ci.low <= ci.mean <= ci.high
    assert 0.49 < ci.low and ci.high < 0.51 and ci.n == 200


def test_paired_ratio_interval_is_narrower_than_dividing_the_unpaired_ones():
    numerator, denominator = _correlated_pair()
    paired = bootstrap_ratio_ci(numerator, denominator, n_resamples=1000)
    num, den = (
        bootstrap_ci(numerator, n_resamples=1000),
        bootstrap_ci(denominator, n_resamples=1000),
    )
    naive = (num.low / den.high, num.high / den.low)
    assert paired.high - paired.low < (naive[1] - naive[0]) / 5
    # Unpaired (the denominator's windows shuffled), the same ratio is about as uncertain as the
    # naive interval says: the pairing, not the arithmetic, is what narrows it.
    shuffled = denominator[torch.randperm(200, generator=torch.Generator().manual_seed(1))]
    unpaired = bootstrap_ratio_ci(numerator, shuffled, n_resamples=1000)
    assert unpaired.high - unpaired.low > 5 * (paired.high - paired.low)


def test_ratio_interval_resamples_whole_groups_of_both_series():
    numerator, denominator = _correlated_pair(n=100)
    numerator[:50] += 0.3  # the first document's windows are all harder for the numerator
    groups = torch.tensor([0] * 50 + [1] * 50)
    grouped = bootstrap_ratio_ci(numerator, denominator, groups=groups, n_resamples=500)
    plain = bootstrap_ratio_ci(numerator, denominator, n_resamples=500)
    assert grouped.n == 2 and grouped.mean == pytest.approx(plain.mean)
    assert grouped.high - grouped.low > 2 * (plain.high - plain.low)


def test_a_reference_near_zero_leaves_the_ratio_interval_open():
    ci = bootstrap_ratio_ci([1.0, 1.0, 1.0, 1.0], [2.0, -1.9, 0.05, 0.05], n_resamples=500)
    assert ci.mean == pytest.approx(4.0 / 0.2)
    assert ci.high == float("inf")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(numerator_values=[1.0, 2.0], denominator_values=[1.0]), "pair up"),
        (dict(numerator_values=[1.0], denominator_values=[-1.0]), "positive"),
        (dict(numerator_values=[], denominator_values=[]), "empty"),
        (dict(numerator_values=[1.0], denominator_values=[float("inf")]), "NaN or inf"),
        (dict(numerator_values=[1.0], denominator_values=[1.0], groups=[0, 1]), "groups"),
    ],
)
def test_bad_ratio_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        bootstrap_ratio_ci(**kwargs)
