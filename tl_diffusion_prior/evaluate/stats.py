"""Bootstrap confidence intervals over documents or sequences."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
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
    v = torch.as_tensor(values, dtype=torch.float64).flatten()
    if v.numel() == 0:
        raise ValueError("values is empty; need at least one value for a confidence interval.")
    if not torch.isfinite(v).all():
        raise ValueError("values contains NaN or inf.")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level!r}.")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples!r}.")
    w = torch.ones_like(v) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
    if w.shape != v.shape or (w < 0).any() or w.sum() <= 0:
        raise ValueError("weights must be non-negative, one per value, with a positive sum.")
    if groups is None:
        sums, counts = v * w, w
    else:
        g = torch.as_tensor(groups).flatten()
        if g.shape != v.shape:
            raise ValueError(f"groups must have one id per value ({v.numel()}), got {g.numel()}.")
        _, inverse = torch.unique(g, return_inverse=True)
        n_groups = int(inverse.max()) + 1
        sums = torch.zeros(n_groups, dtype=torch.float64).index_add_(0, inverse, v * w)
        counts = torch.zeros(n_groups, dtype=torch.float64).index_add_(0, inverse, w)
    mean = float(sums.sum() / counts.sum())
    n_units = sums.numel()
    generator = torch.Generator().manual_seed(seed)
    estimates = torch.empty(n_resamples, dtype=torch.float64)
    # Resample in blocks so that memory stays bounded for many units.
    block = max(1, 2_000_000 // n_units)
    for start in range(0, n_resamples, block):
        size = min(block, n_resamples - start)
        index = torch.randint(n_units, (size, n_units), generator=generator)
        num, den = sums[index].sum(1), counts[index].sum(1)
        estimates[start : start + size] = num / den.clamp_min(1e-300)
    alpha = (1.0 - level) / 2.0
    low, high = torch.quantile(estimates, torch.tensor([alpha, 1.0 - alpha], dtype=torch.float64))
    return ConfidenceInterval(mean=mean, low=float(low), high=float(high), n=n_units, level=level)
