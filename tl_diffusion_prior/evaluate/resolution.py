"""How small a difference in delta LM one evaluation run can tell apart.

Every method is measured on the same windows, so two methods are compared by the bootstrap
interval of their *paired* per-window difference, which is much narrower than either method's own
interval (the windows' difficulty cancels). :func:`resolution` summarises, per data set and
condition, the half-widths of those paired intervals over every pair of methods: a difference
larger than the median half-width is resolved at 95% for a typical pair. It also gives each
method's own (unpaired) half-width, the precision of one figure on its own, per corpus source
where the windows carry source labels. :func:`paired_ratio` gives the same paired interval for the
ratio of two methods' delta LM (the benchmark targets' ratios).
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Mapping, Sequence

from jaxtyping import Int
from torch import Tensor

from tl_diffusion_prior.evaluate.fidelity import FidelityResult
from tl_diffusion_prior.evaluate.stats import (
    ConfidenceInterval,
    bootstrap_ci,
    bootstrap_ratio_ci,
)

__all__ = ["half_width", "paired_difference", "paired_ratio", "resolution"]


def half_width(interval: ConfidenceInterval) -> float:
    """Half the width of an interval: the ``±`` of a figure."""
    return (interval.high - interval.low) / 2.0


def paired_difference(
    a: FidelityResult,
    b: FidelityResult,
    doc_ids: Tensor,
    n_resamples: int = 2000,
    seed: int = 0,
) -> ConfidenceInterval:
    """Delta LM of ``a`` minus ``b`` on the same windows, with a document-clustered interval."""
    _check_same_windows(a, b)
    return bootstrap_ci(
        a.window_deltas - b.window_deltas, groups=doc_ids, n_resamples=n_resamples, seed=seed
    )


def paired_ratio(
    a: FidelityResult,
    b: FidelityResult,
    doc_ids: Int[Tensor, " windows"],
    n_resamples: int = 2000,
    seed: int = 0,
) -> ConfidenceInterval:
    """Delta LM of ``a`` over ``b`` on the same windows, with a paired, document-clustered
    interval (:func:`~tl_diffusion_prior.evaluate.stats.bootstrap_ratio_ci`); its point estimate
    is ``a.delta_lm.mean / b.delta_lm.mean``."""
    _check_same_windows(a, b)
    return bootstrap_ratio_ci(
        a.window_deltas, b.window_deltas, groups=doc_ids, n_resamples=n_resamples, seed=seed
    )


def _check_same_windows(a: FidelityResult, b: FidelityResult) -> None:
    """Refuse a paired comparison of results without per-window deltas or from other windows."""
    if a.window_deltas is None or b.window_deltas is None:
        raise ValueError("Both results need their per-window deltas (window_deltas).")
    if a.window_deltas.shape != b.window_deltas.shape or a.dataset != b.dataset:
        raise ValueError(
            f"{a.label} and {b.label} were not measured on the same windows "
            f"({a.dataset!r} vs {b.dataset!r})."
        )


def resolution(
    results: Sequence[FidelityResult],
    doc_ids: Mapping[str, Tensor],
    conditions: Sequence[str],
    n_resamples: int = 2000,
    seed: int = 0,
) -> dict[str, dict[str, dict]]:
    """Per data set and condition: the paired and unpaired half-widths (see module docstring).

    Args:
        results: The run's fidelity results (with ``window_deltas``).
        doc_ids: Data set name -> the bootstrap cluster of each window.
        conditions: The conditions to summarise (e.g. reconstruction and the headline noise).
        n_resamples / seed: Of every bootstrap.

    Returns:
        ``{dataset: {condition: {"paired_median", "paired_max", "n_pairs", "unpaired_median",
        "unpaired_per_group"}}}``; the identity is left out (its reconstruction is exactly 0).
    """
    out: dict[str, dict[str, dict]] = {}
    for dataset, ids in doc_ids.items():
        for condition in conditions:
            members = [
                r
                for r in results
                if r.dataset == dataset
                and r.condition == condition
                and r.method != "identity"
                and r.window_deltas is not None
            ]
            if len(members) < 2:
                continue
            paired = [
                half_width(paired_difference(a, b, ids, n_resamples, seed))
                for a, b in itertools.combinations(members, 2)
            ]
            groups = {g for r in members for g in r.per_group}
            out.setdefault(dataset, {})[condition] = {
                "paired_median": statistics.median(paired),
                "paired_max": max(paired),
                "n_pairs": len(paired),
                "unpaired_median": statistics.median(half_width(r.delta_lm) for r in members),
                "unpaired_per_group": {
                    g: statistics.median(
                        half_width(r.per_group[g]) for r in members if g in r.per_group
                    )
                    for g in sorted(groups)
                },
            }
    return out
