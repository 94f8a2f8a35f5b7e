"""Bootstrap confidence intervals over documents or sequences.

:func:`bootstrap_ci` gives the interval of one (weighted) mean, :func:`bootstrap_ratio_ci` the
paired interval of the ratio of two means measured on the same units.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor


@dataclass
class ConfidenceInterval:
    """A mean with a percentile-bootstrap interval ``[low, high]`` at ``level``.

    ``n`` is the number of resampled units (documents when grouped, else values).
    """

    mean: float
    low: float
    high: float
    n: int
    level: float

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def bootstrap_ci(
    values: Tensor | Sequence[float],
    groups: Tensor | Sequence[int] | None = None,
    weights: Tensor | Sequence[float] | None = None,
    n_resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> ConfidenceInterval:
    """Percentile bootstrap of the (weighted) mean of ``values``.

    Args:
        values: One number per unit, e.g. each sequence's mean loss increase.
        groups: Optional cluster id per value (e.g. the document a sequence came from); whole
            clusters are resampled, so correlated windows of one document do not shrink the
            interval.
        weights: Optional weight per value (e.g. its token count); the statistic is
            ``sum(w v) / sum(w)``.
        n_resamples: Bootstrap resamples.
        level: Coverage, e.g. 0.95.
        seed: Seed of the resampling (the interval is deterministic).
    """
    v = _checked_values(values, "values")
    _check_resampling(level, n_resamples)
    w = torch.ones_like(v) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
    if w.shape != v.shape or (w < 0).any() or w.sum() <= 0:
        raise ValueError("weights must be non-negative, one per value, with a positive sum.")
    sums, counts = _cluster_sums(v * w, groups), _cluster_sums(w, groups)
    mean = float(sums.sum() / counts.sum())
    estimates = _resampled_ratios(sums, counts.clamp_min(1e-300), n_resamples, seed)
    low, high = _percentiles(estimates, level)
    return ConfidenceInterval(mean=mean, low=low, high=high, n=sums.numel(), level=level)


def bootstrap_ratio_ci(
    numerator_values: Tensor | Sequence[float],
    denominator_values: Tensor | Sequence[float],
    groups: Tensor | Sequence[int] | None = None,
    n_resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> ConfidenceInterval:
    """Paired percentile bootstrap of ``mean(numerator_values) / mean(denominator_values)``.

    Both methods were measured on the same units (windows), so each resample draws one set of
    units (whole ``groups`` at a time, as :func:`bootstrap_ci`) and takes the ratio of the two
    means over that *same* draw. A hard window raises both means together and the ratio barely
    moves, so the interval only reflects how the two methods differ across windows. Dividing the
    two methods' own (unpaired) interval endpoints instead treats their errors as independent and
    adds up both windows' difficulty spreads: far wider whenever the methods' per-window values
    are positively correlated, as delta LMs of two methods on the same text are.

    Args:
        numerator_values / denominator_values: One number per unit each, in the same unit order.
        groups: Optional cluster id per unit (the document of each window).
        n_resamples / level / seed: As for :func:`bootstrap_ci`.

    Returns:
        The ratio of the means with its interval; ``n`` is the number of resampled units. A
        resample whose denominator mean is not positive leaves the ratio unbounded and counts as
        ``inf``, so a reference indistinguishable from 0 gives an open-ended interval.
    """
    num = _checked_values(numerator_values, "numerator_values")
    den = _checked_values(denominator_values, "denominator_values")
    if num.shape != den.shape:
        raise ValueError(
            f"numerator_values and denominator_values must pair up unit by unit, got "
            f"{num.numel()} and {den.numel()} values."
        )
    _check_resampling(level, n_resamples)
    num_sums, den_sums = _cluster_sums(num, groups), _cluster_sums(den, groups)
    if den_sums.sum() <= 0:
        raise ValueError("The denominator's mean must be positive for a ratio.")
    ratio = float(num_sums.sum() / den_sums.sum())
    estimates = _resampled_ratios(num_sums, den_sums, n_resamples, seed)
    low, high = _percentiles(estimates, level)
    return ConfidenceInterval(mean=ratio, low=low, high=high, n=num_sums.numel(), level=level)


def _checked_values(values: Tensor | Sequence[float], name: str) -> Float[Tensor, " units"]:
    """``values`` as a flat float64 tensor; refuses an empty or non-finite one."""
    v = torch.as_tensor(values, dtype=torch.float64).flatten()
    if v.numel() == 0:
        raise ValueError(f"{name} is empty; need at least one value for a confidence interval.")
    if not torch.isfinite(v).all():
        raise ValueError(f"{name} contains NaN or inf.")
    return v


def _check_resampling(level: float, n_resamples: int) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level!r}.")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples!r}.")


def _cluster_sums(
    values: Float[Tensor, " units"], groups: Tensor | Sequence[int] | None
) -> Float[Tensor, " clusters"]:
    """Per cluster, the sum of its units' ``values`` (the units themselves without groups);
    clusters in the order of their sorted ids, so that two calls with the same ``groups`` pair up.
    """
    if groups is None:
        return values
    g = torch.as_tensor(groups).flatten()
    if g.shape != values.shape:
        raise ValueError(f"groups must have one id per value ({values.numel()}), got {g.numel()}.")
    _, inverse = torch.unique(g, return_inverse=True)
    n_groups = int(inverse.max()) + 1
    return torch.zeros(n_groups, dtype=torch.float64).index_add_(0, inverse, values)


def _resampled_ratios(
    top: Float[Tensor, " clusters"],
    bottom: Float[Tensor, " clusters"],
    n_resamples: int,
    seed: int,
) -> Float[Tensor, " resamples"]:
    """``sum(top[draw]) / sum(bottom[draw])`` for ``n_resamples`` draws of the clusters with
    replacement (the same draw for both: paired); ``inf`` where the bottom sum is not positive."""
    n_units = top.numel()
    generator = torch.Generator().manual_seed(seed)
    estimates = torch.empty(n_resamples, dtype=torch.float64)
    # Resample in blocks so that memory stays bounded for many units.
    block = max(1, 2_000_000 // n_units)
    for start in range(0, n_resamples, block):
        size = min(block, n_resamples - start)
        index = torch.randint(n_units, (size, n_units), generator=generator)
        num, den = top[index].sum(1), bottom[index].sum(1)
        estimates[start : start + size] = torch.where(den > 0, num / den, torch.inf)
    return estimates


def _percentiles(estimates: Float[Tensor, " resamples"], level: float) -> tuple[float, float]:
    """The equal-tailed percentile interval at ``level`` (an ``inf`` end stays ``inf``)."""
    alpha = (1.0 - level) / 2.0
    q = torch.quantile(estimates, torch.tensor([alpha, 1.0 - alpha], dtype=torch.float64))
    # Interpolating next to an inf estimate gives NaN; that end of the interval is unbounded.
    q = torch.nan_to_num(q, nan=torch.inf, posinf=torch.inf)
    return float(q[0]), float(q[1])
