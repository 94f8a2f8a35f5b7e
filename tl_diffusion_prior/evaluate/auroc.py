"""AUROC of scores against binary labels: exact with ties, column-wise, and with a bootstrap
interval that resamples whole documents.

The AUROC is the Mann-Whitney probability ``P(s_pos > s_neg) + P(s_pos = s_neg) / 2``: 1 when
every positive scores above every negative, 0.5 for a score that knows nothing, 0 when it ranks
them backwards. Ties count one half, so a sparse feature (an SAE latent that is zero on most
tokens) is neither rewarded nor punished for its zeros.

:func:`grouped_auroc_ci` is the bootstrap of :mod:`~tl_diffusion_prior.evaluate.stats` for a
statistic that is not a mean: tokens of one document are correlated, so whole documents are
resampled (each resample gives every row its document's multiplicity as a weight, and the AUROC
is computed with those weights), and the interval is the percentile interval, returned as the
same :class:`~tl_diffusion_prior.evaluate.stats.ConfidenceInterval`.
"""

from __future__ import annotations

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from tl_diffusion_prior.evaluate.stats import ConfidenceInterval


def _check_labels(labels: Tensor, n: int, name: str = "labels") -> Tensor:
    labels = torch.as_tensor(labels).flatten()
    if labels.numel() != n:
        raise ValueError(f"{name} must hold one label per score ({n}), got {labels.numel()}.")
    if labels.dtype != torch.bool:
        if not torch.isin(labels, torch.tensor([0, 1], dtype=labels.dtype)).all():
            raise ValueError(f"{name} must be booleans or 0/1, got values {labels.unique()}.")
        labels = labels.bool()
    n_pos = int(labels.sum())
    if n_pos == 0 or n_pos == n:
        raise ValueError(
            f"{name} must hold both classes for an AUROC, got {n_pos} positives of {n}."
        )
    return labels


def column_auroc(
    features: Float[Tensor, "n k"], labels: Bool[Tensor, " n"] | Int[Tensor, " n"]
) -> Float[Tensor, " k"]:
    """The AUROC of every column of ``features`` as a score for ``labels`` (float64).

    Ranks with ties averaged (``searchsorted`` left and right of each value in its sorted
    column), then ``(rank sum of positives - n_pos (n_pos + 1) / 2) / (n_pos n_neg)``.
    """
    if features.ndim != 2:
        raise ValueError(f"features must be [n, k], got shape {tuple(features.shape)}.")
    labels = _check_labels(labels, features.shape[0]).to(features.device)
    if not torch.isfinite(features).all():
        raise ValueError("features contain NaN or inf; an AUROC needs finite scores.")
    columns = features.double().T.contiguous()  # [k, n]: searchsorted works along the last dim
    ordered = columns.sort(dim=1).values
    left = torch.searchsorted(ordered, columns, right=False)
    right = torch.searchsorted(ordered, columns, right=True)
    ranks = (left + right + 1).double() / 2  # 1-based average rank of each value among ties
    n_pos = int(labels.sum())
    n_neg = labels.numel() - n_pos
    rank_sum = ranks[:, labels].sum(dim=1)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def auroc(scores: Float[Tensor, " n"], labels: Bool[Tensor, " n"] | Int[Tensor, " n"]) -> float:
    """The AUROC of ``scores`` for ``labels`` (positives should score higher)."""
    return float(column_auroc(torch.as_tensor(scores).reshape(-1, 1), labels)[0])


def _weighted_auroc(
    value_index: Int[Tensor, " n"],
    n_values: int,
    labels: Bool[Tensor, " n"],
    weights: Float[Tensor, "r n"],
) -> Float[Tensor, " r"]:
    """AUROC of each weighting of the rows (``r`` of them at once), from the rows' indices into
    the sorted distinct score values: positives' and negatives' weight per distinct value, then
    for each positive value the negative weight strictly below it plus half that at it."""
    r = weights.shape[0]
    index = value_index.expand(r, -1)
    pos = torch.zeros(r, n_values, dtype=torch.float64).scatter_add_(1, index, weights * labels)
    neg = torch.zeros(r, n_values, dtype=torch.float64).scatter_add_(1, index, weights * ~labels)
    below = neg.cumsum(dim=1) - neg
    num = (pos * (below + neg / 2)).sum(dim=1)
    return num / (pos.sum(dim=1) * neg.sum(dim=1)).clamp_min(1e-300)


def _strata(
    group_index: Int[Tensor, " n"], labels: Bool[Tensor, " n"], n_groups: int
) -> list[Tensor]:
    """The groups split by the classes they hold (only positives, only negatives, both): each
    stratum is resampled on its own, so every resample keeps both classes (a resample without
    positives has no AUROC) and their numbers of groups."""
    has_pos = torch.zeros(n_groups, dtype=torch.bool).index_fill_(0, group_index[labels], True)
    has_neg = torch.zeros(n_groups, dtype=torch.bool).index_fill_(0, group_index[~labels], True)
    kinds = has_pos.long() * 2 + has_neg.long()
    return [(kinds == kind).nonzero()[:, 0] for kind in (1, 2, 3) if (kinds == kind).any()]


def grouped_auroc_ci(
    scores: Float[Tensor, " n"],
    labels: Bool[Tensor, " n"] | Int[Tensor, " n"],
    groups: Int[Tensor, " n"] | None = None,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> ConfidenceInterval:
    """The AUROC of ``scores`` for ``labels`` with a percentile-bootstrap interval.

    Args:
        scores: One score per row; positives should score higher.
        labels: True (or 1) for the positive class (e.g. shifted tokens), False for clean ones.
        groups: The cluster each row belongs to (its document); whole clusters are resampled, so
            a clean token and its shifted copy (same document) travel together. Groups with only
            positives, only negatives and both are resampled separately (a stratified bootstrap,
            so no resample lacks a class). None resamples rows.
        n_resamples: Bootstrap resamples.
        level: Coverage of the interval.
        seed: Seed of the resampling (the interval is deterministic).

    ``ConfidenceInterval.mean`` is the AUROC of all rows and ``n`` the number of clusters.
    """
    scores = torch.as_tensor(scores, dtype=torch.float64).flatten()
    labels = _check_labels(labels, scores.numel())
    if not torch.isfinite(scores).all():
        raise ValueError("scores contain NaN or inf; an AUROC needs finite scores.")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level!r}.")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples!r}.")
    if groups is None:
        group_index = torch.arange(scores.numel())
    else:
        groups = torch.as_tensor(groups).flatten()
        if groups.numel() != scores.numel():
            raise ValueError(
                f"groups must have one id per score ({scores.numel()}), got {groups.numel()}."
            )
        group_index = torch.unique(groups, return_inverse=True)[1]
    n_groups = int(group_index.max()) + 1
    distinct, value_index = torch.unique(scores, return_inverse=True)
    ones = torch.ones(1, scores.numel(), dtype=torch.float64)
    full = float(_weighted_auroc(value_index, distinct.numel(), labels, ones))
    strata = _strata(group_index, labels, n_groups)
    generator = torch.Generator().manual_seed(seed)
    estimates = []
    block = max(1, 4_000_000 // max(scores.numel(), distinct.numel() * 2))  # bounded memory
    for start in range(0, n_resamples, block):
        size = min(block, n_resamples - start)
        counts = torch.zeros(size, n_groups, dtype=torch.float64)
        for members in strata:
            draws = members[
                torch.randint(members.numel(), (size, members.numel()), generator=generator)
            ]
            counts.scatter_add_(1, draws, torch.ones(draws.shape, dtype=torch.float64))
        estimates.append(
            _weighted_auroc(value_index, distinct.numel(), labels, counts[:, group_index])
        )
    alpha = (1.0 - level) / 2.0
    quantiles = torch.tensor([alpha, 1.0 - alpha], dtype=torch.float64)
    low, high = torch.quantile(torch.cat(estimates), quantiles)
    return ConfidenceInterval(mean=full, low=float(low), high=float(high), n=n_groups, level=level)
