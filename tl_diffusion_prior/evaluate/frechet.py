"""Frechet distance between activation distributions, full covariance, float64, scipy-free.

``FD = ||mu1 - mu2||^2 + tr(C1) + tr(C2) - 2 tr((C1^1/2 C2 C1^1/2)^1/2)``. The cross term is
computed from symmetric eigendecompositions only: ``S = C1^1/2`` by ``eigh``, then the eigenvalues
of the symmetric PSD matrix ``S C2 S`` (whose square roots sum to ``tr((C1 C2)^1/2)``). Unlike
``scipy.linalg.sqrtm`` on the non-symmetric ``C1 C2``, this never produces complex parts.

The floor is the distance between two real samples (train vs held-out) of the same sizes as the
comparison, since FD estimated from finite samples is biased upwards; each FD is reported as a
multiple of it. Note that FD only sees the first two moments: a Gaussian with the data's mean and
covariance reaches the floor.

:func:`frechet_ratio_interval` gives that ratio a bootstrap interval: the compared samples, the
floor's training rows and the held-out rows are all resampled, the held-out rows by whole windows
(tokens of one window are correlated).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from tl_diffusion_prior.core.moments import covariance
from tl_diffusion_prior.core.normalizer import Normalizer
from tl_diffusion_prior.core.validation import check_int
from tl_diffusion_prior.evaluate.stats import ConfidenceInterval


@dataclass
class GaussianMoments:
    """Mean and (population) covariance of a sample, float64 on CPU."""

    mean: Float[Tensor, " d"]
    cov: Float[Tensor, "d d"]
    n: int

    @classmethod
    def from_samples(
        cls, x: Float[Tensor, "n d"], normalizer: Normalizer | None = None
    ) -> GaussianMoments:
        """Moments of ``x`` (optionally normalised first), accumulated in float64 by chunks."""
        if not isinstance(x, Tensor) or x.ndim != 2 or not x.is_floating_point():
            raise ValueError(f"x must be a float [n, d] tensor, got {getattr(x, 'shape', x)}.")
        if x.shape[0] < 2:
            raise ValueError(f"Need at least 2 samples for a covariance, got {x.shape[0]}.")
        normalize = None if normalizer is None else lambda rows: normalizer.normalize(rows.float())
        mean, cov = covariance(x, normalize)
        return cls(mean=mean, cov=cov, n=x.shape[0])


def sqrtm_psd(matrix: Float[Tensor, "d d"]) -> Float[Tensor, "d d"]:
    """Symmetric PSD square root via ``eigh`` (negative round-off eigenvalues clamped to 0)."""
    sym = 0.5 * (matrix + matrix.T)
    eigenvalues, eigenvectors = torch.linalg.eigh(sym)
    return (eigenvectors * eigenvalues.clamp_min(0.0).sqrt()) @ eigenvectors.T


def frechet_distance_from_moments(a: GaussianMoments, b: GaussianMoments) -> float:
    """Frechet distance between ``N(a.mean, a.cov)`` and ``N(b.mean, b.cov)``, in float64."""
    if a.mean.shape != b.mean.shape:
        raise ValueError(f"Dimension mismatch: {tuple(a.mean.shape)} vs {tuple(b.mean.shape)}.")
    mean_a, mean_b = a.mean.double().cpu(), b.mean.double().cpu()
    cov_a, cov_b = a.cov.double().cpu(), b.cov.double().cpu()
    root_a = sqrtm_psd(cov_a)
    cross = root_a @ cov_b @ root_a
    cross_eigenvalues = torch.linalg.eigvalsh(0.5 * (cross + cross.T)).clamp_min(0.0)
    trace_term = torch.trace(cov_a) + torch.trace(cov_b) - 2.0 * cross_eigenvalues.sqrt().sum()
    value = (mean_a - mean_b).square().sum() + trace_term
    # Round-off can leave a tiny negative number for identical distributions.
    return max(float(value), 0.0)


def frechet_distance(
    x: Float[Tensor, "n d"],
    y: Float[Tensor, "m d"],
    normalizer: Normalizer | None = None,
) -> float:
    """Frechet distance between the samples ``x`` and ``y`` (normalised first if given)."""
    return frechet_distance_from_moments(
        GaussianMoments.from_samples(x, normalizer), GaussianMoments.from_samples(y, normalizer)
    )


@dataclass
class FrechetResult:
    """FD of one sample set against the held-out activations, raw and normalised.

    ``*_ratio`` is the FD divided by the train-vs-held-out floor in the same space;
    ``normalized_ratio_ci`` its bootstrap interval (a :class:`ConfidenceInterval` as a dict), where
    one was computed.
    """

    name: str
    n: int
    raw: float
    normalized: float
    raw_ratio: float
    normalized_ratio: float
    normalized_ratio_ci: dict | None = None

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def frechet_table(
    candidates: dict[str, Float[Tensor, "n d"]],
    heldout: Float[Tensor, "m d"],
    train: Float[Tensor, "k d"],
    normalizer: Normalizer,
    generator: torch.Generator | None = None,
) -> tuple[FrechetResult, list[FrechetResult]]:
    """The floor (train vs held-out) and every candidate's FD against the held-out rows.

    ``train`` is subsampled (without replacement) to the size of the largest candidate, so that
    the floor carries the same finite-sample bias as the comparisons.
    """
    n_target = max((v.shape[0] for v in candidates.values()), default=train.shape[0])
    if train.shape[0] > n_target:
        index = torch.randperm(train.shape[0], generator=generator)[:n_target]
        train = train.index_select(0, index.to(train.device))
    held_raw = GaussianMoments.from_samples(heldout)
    held_norm = GaussianMoments.from_samples(heldout, normalizer)

    def distances(x: Tensor) -> tuple[float, float]:
        raw = frechet_distance_from_moments(GaussianMoments.from_samples(x), held_raw)
        norm = frechet_distance_from_moments(GaussianMoments.from_samples(x, normalizer), held_norm)
        return raw, norm

    floor_raw, floor_norm = distances(train)
    floor = FrechetResult("train (floor)", int(train.shape[0]), floor_raw, floor_norm, 1.0, 1.0)
    results = []
    for name, samples in candidates.items():
        raw, norm = distances(samples)
        results.append(
            FrechetResult(
                name,
                int(samples.shape[0]),
                raw,
                norm,
                raw / floor_raw if floor_raw > 0 else float("inf"),
                norm / floor_norm if floor_norm > 0 else float("inf"),
            )
        )
    return floor, results


def frechet_ratio_interval(
    candidate: Float[Tensor, "n d"],
    heldout: Float[Tensor, "m d"],
    train: Float[Tensor, "k d"],
    normalizer: Normalizer,
    heldout_groups: Int[Tensor, " groups"] | None = None,
    n_resamples: int = 200,
    level: float = 0.95,
    seed: int = 0,
) -> ConfidenceInterval:
    """Bootstrap interval of ``FD(candidate, heldout) / FD(train, heldout)``, normalised.

    Each resample draws every row set again with replacement: the candidate's rows, the floor's
    ``train`` rows and the held-out rows (whole groups of them when ``heldout_groups`` gives each
    row's window or document). Both distances of a resample share its held-out draw, as the ratio
    they form does. The interval's ``mean`` is the ratio on the full samples, the same number as
    :func:`frechet_table`'s ``normalized_ratio`` for these rows; its ``n`` the number of held-out
    units resampled (groups, else rows).

    Resampling with replacement repeats rows, which halves each set's effective size and so adds
    finite-sample bias to both distances: the resampled ratios lean towards 1 and can miss the
    full-sample ratio altogether. The bootstrap is therefore used for the spread only: the interval
    is its quantiles moved so that their median falls on the full-sample ratio. Resampled
    covariances are summed in float32 about their float64 means (exact to about 1e-6 relative, far
    below the spread).
    """
    check_int("n_resamples", n_resamples, minimum=1)
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level!r}.")
    if heldout_groups is not None and heldout_groups.shape != heldout.shape[:1]:
        raise ValueError(
            f"heldout_groups must give one group per held-out row ({heldout.shape[0]}), "
            f"got shape {tuple(heldout_groups.shape)}."
        )
    sets = [_normalized(rows, normalizer) for rows in (candidate, train, heldout)]
    full = [GaussianMoments.from_samples(rows) for rows in sets]  # already normalised
    floor = frechet_distance_from_moments(full[1], full[2])
    point = frechet_distance_from_moments(full[0], full[2]) / floor if floor > 0 else float("inf")
    if heldout_groups is None:
        heldout_groups = torch.arange(heldout.shape[0])
    _, group_of_row = torch.unique(heldout_groups.cpu(), return_inverse=True)
    n_groups = int(group_of_row.max()) + 1
    generator = torch.Generator().manual_seed(seed)
    ratios = torch.empty(n_resamples, dtype=torch.float64)
    for i in range(n_resamples):
        weights = [_draw_counts(rows.shape[0], generator) for rows in sets[:2]]
        weights.append(_draw_counts(n_groups, generator)[group_of_row])
        moments = [_weighted_moments(rows, w) for rows, w in zip(sets, weights, strict=True)]
        resampled_floor = frechet_distance_from_moments(moments[1], moments[2])
        ratios[i] = frechet_distance_from_moments(moments[0], moments[2]) / resampled_floor
    alpha = (1.0 - level) / 2.0
    levels = torch.tensor([alpha, 0.5, 1.0 - alpha], dtype=torch.float64)
    low, median, high = torch.quantile(ratios, levels).tolist()
    return ConfidenceInterval(
        mean=point,
        low=point - (median - low),
        high=point + (high - median),
        n=n_groups,
        level=level,
    )


def _normalized(rows: Tensor, normalizer: Normalizer) -> Tensor:
    return normalizer.normalize(rows.float().cpu())


def _draw_counts(n: int, generator: torch.Generator) -> Tensor:
    """How often each of ``n`` units is drawn in one resample of size ``n`` with replacement."""
    return torch.bincount(torch.randint(n, (n,), generator=generator), minlength=n).float()


def _weighted_moments(rows: Float[Tensor, "n d"], weights: Float[Tensor, " n"]) -> GaussianMoments:
    """Mean and covariance of ``rows`` each counted ``weights`` times (rows kept once in memory)."""
    total = weights.sum()
    mean = (weights.double() @ rows.double()) / total.double()
    centred = rows - mean.float()
    cov = (centred * weights[:, None]).T @ centred / total
    return GaussianMoments(mean=mean, cov=cov.double(), n=int(total))
