"""Out-of-distribution scores for activations, the shifts they are tested on, and the AUROC table.

A score maps ``[n, d_model]`` RAW activations to ``[n]`` numbers, larger meaning less typical.
Besides the prior's manifold score (``prior.score``) the benchmark compares three baselines, all
fitted on TRAINING activations only, never on the rows they score:

* :func:`mahalanobis_distance`: the squared Mahalanobis distance under the full-covariance
  Gaussian (:class:`~tl_diffusion_prior.evaluate.baselines.gaussian.GaussianBaseline`), i.e. the
  Gaussian's negative log-likelihood up to constants;
* :func:`reconstruction_error`: an SAE's (any baseline with ``reconstruct``) squared error per
  dimension, measured in the normalised space so a few massive dimensions do not dominate;
* :class:`KNNDistance`: the mean Euclidean distance to the ``k`` nearest training activations in
  the normalised space.

The shifts (:func:`steer_rows`, :func:`noise_rows`) act on captured activations exactly as the
hook would: plain steering adds ``r * reference_norm * unit vector`` to the activation at the hook,
which is what the monitor's score sees; noise is Gaussian with a standard deviation ``level``
times each dimension's own (so ``level`` is in the normalised space's units).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from tl_diffusion_prior.core.normalizer import Normalizer
from tl_diffusion_prior.core.validation import check_float, check_positive_int
from tl_diffusion_prior.evaluate.auroc import grouped_auroc_ci
from tl_diffusion_prior.evaluate.baselines.gaussian import GaussianBaseline
from tl_diffusion_prior.evaluate.stats import ConfidenceInterval

#: A scorer: RAW ``[n, d_model]`` activations -> ``[n]`` scores, larger = less typical.
Scorer = Callable[[Tensor], Tensor]


@torch.no_grad()
def mahalanobis_distance(
    gaussian: GaussianBaseline, x: Float[Tensor, "n d_model"], floor: float = 1e-6
) -> Float[Tensor, " n"]:
    """``(z - mu)^T Sigma^-1 (z - mu)`` of each RAW row in the Gaussian's normalised space.

    Eigenvalues below ``floor`` times the largest are raised to it: a direction the training rows
    never moved in would otherwise make any change along it infinitely unlikely.
    """
    z = gaussian.normalizer.normalize(x.to(gaussian.device, torch.float32)).double()
    lam = gaussian.eigenvalues.clamp_min(floor * float(gaussian.eigenvalues.max()))
    coordinates = (z - gaussian.mean) @ gaussian.eigenvectors
    return (coordinates.square() / lam).sum(dim=-1).float().to(x.device)


@torch.no_grad()
def reconstruction_error(
    baseline, normalizer: Normalizer, x: Float[Tensor, "n d_model"]
) -> Float[Tensor, " n"]:
    """Mean squared error per dimension of ``baseline.reconstruct(x)``, in ``normalizer``'s
    space (the prior's): each dimension's error divided by its own standard deviation."""
    error = normalizer.normalize(baseline.reconstruct(x).float()) - normalizer.normalize(x.float())
    return error.square().mean(dim=-1)


class KNNDistance:
    """Mean distance to the ``k`` nearest training activations, in a normalised space.

    Args:
        train: RAW ``[m, d_model]`` training activations (the rows scored must not be among them:
            a row's distance to itself is 0).
        normalizer: The space the distances are measured in (the prior's).
        k: Neighbours averaged.
        chunk_size: Rows scored per distance matrix (memory ``chunk_size * m`` floats).
    """

    def __init__(
        self,
        train: Float[Tensor, "m d_model"],
        normalizer: Normalizer,
        k: int = 10,
        chunk_size: int = 1024,
    ) -> None:
        check_positive_int("k", k)
        check_positive_int("chunk_size", chunk_size)
        if train.ndim != 2 or train.shape[0] < k:
            raise ValueError(
                f"train must be [m, d_model] with at least k={k} rows, got {tuple(train.shape)}."
            )
        self.normalizer = normalizer
        self.k = k
        self.chunk_size = chunk_size
        self.train = normalizer.normalize(train.float())
        self._train_sq = self.train.square().sum(dim=-1)

    @torch.no_grad()
    def __call__(self, x: Float[Tensor, "n d_model"]) -> Float[Tensor, " n"]:
        out = []
        for start in range(0, x.shape[0], self.chunk_size):
            z = self.normalizer.normalize(x[start : start + self.chunk_size].float())
            # |a - b|^2 = |a|^2 + |b|^2 - 2 a.b: one matmul instead of an [n, m, d] difference.
            squared = z.square().sum(-1, keepdim=True) + self._train_sq - 2 * z @ self.train.T
            nearest = squared.clamp_min(0).topk(self.k, dim=-1, largest=False).values
            out.append(nearest.sqrt().mean(dim=-1))
        return torch.cat(out)


def steer_rows(
    x: Float[Tensor, "n d_model"], vector: Float[Tensor, " d_model"], scale: float, norm: float
) -> Float[Tensor, "n d_model"]:
    """``x + scale * norm * vector / |vector|``: plain steering at relative scale ``scale`` with
    reference norm ``norm``, as the hook adds it."""
    length = float(vector.double().norm())
    if not length > 0:
        raise ValueError("vector is zero; steering needs a direction.")
    return x + (scale * norm / length) * vector.to(x.dtype)


def noise_rows(
    x: Float[Tensor, "n d_model"],
    level: float,
    normalizer: Normalizer,
    generator: torch.Generator | None = None,
) -> Float[Tensor, "n d_model"]:
    """``x`` plus Gaussian noise of standard deviation ``level`` times each dimension's std."""
    check_float("level", level, minimum=0.0)
    noise = torch.randn(x.shape, generator=generator, dtype=torch.float32)
    return x + (level * normalizer.std.float().cpu() * noise).to(x.device, x.dtype)


@dataclass
class ShiftResult:
    """The AUROC of one score telling clean rows from one shift's rows.

    Attributes:
        shift: The shift's name (e.g. ``"steer r=0.5"``).
        scorer: The score's name.
        auroc: The AUROC with its bootstrap interval over documents.
        clean_mean, shifted_mean: The score's mean on either side.
    """

    shift: str
    scorer: str
    auroc: ConfidenceInterval
    clean_mean: float
    shifted_mean: float

    def to_dict(self) -> dict:
        return {**self.__dict__, "auroc": self.auroc.to_dict()}


def shift_aurocs(
    clean_scores: Mapping[str, Tensor],
    clean_groups: Int[Tensor, " n"],
    shifted_scores: Mapping[str, Mapping[str, Tensor]],
    shifted_groups: Mapping[str, Tensor],
    n_resamples: int = 1000,
    seed: int = 0,
) -> list[ShiftResult]:
    """Every scorer's AUROC (shifted = positive) for every shift.

    Args:
        clean_scores: Scorer name -> scores of the clean rows.
        clean_groups: The document of each clean row.
        shifted_scores: Shift name -> scorer name -> scores of that shift's rows.
        shifted_groups: Shift name -> the document of each of its rows; a shift of the clean
            rows (steered, noised) shares the clean rows' document ids, so a document and its
            shifted copy are resampled together; another domain's rows carry ids of their own.
    """
    results = []
    for shift, per_scorer in shifted_scores.items():
        groups = torch.cat([clean_groups, shifted_groups[shift]])
        for scorer, shifted in per_scorer.items():
            clean = clean_scores[scorer]
            scores = torch.cat([clean.double().cpu(), shifted.double().cpu()])
            labels = torch.cat(
                [
                    torch.zeros(clean.numel(), dtype=torch.bool),
                    torch.ones(shifted.numel(), dtype=torch.bool),
                ]
            )
            interval = grouped_auroc_ci(scores, labels, groups, n_resamples, seed=seed)
            results.append(
                ShiftResult(shift, scorer, interval, float(clean.mean()), float(shifted.mean()))
            )
    return results
