"""The Gaussian reference loss: what a prior would reach if it only knew the data's covariance.

The optimal denoiser for a Gaussian with the data's mean and covariance has a closed-form loss under
each prior's objective (``DiffusionPrior.gaussian_reference_loss``). A held-out loss below this
reference means the prior has learned structure beyond second-order statistics; a loss above it
means it has not yet learned even the covariance.

Which covariance matters. Scored on the same rows its covariance came from, the Gaussian is
judged in-sample: with ``n`` rows of width ``d`` the sample spectrum spreads (small eigenvalues
shrink), which lowers the reference, by several percent at ``d / n ~ 0.1``, and any shift between
the training and held-out text lowers it further. A prior is trained on other rows than it is
validated on, so the fair reference is the same: a Gaussian fitted on the *training* rows and
scored on the held-out rows (``fit_activations``), exactly what a linear model trained alongside
the prior would reach.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from tl_diffusion_prior.core.moments import CovarianceSums
from tl_diffusion_prior.priors.base import DiffusionPrior


@dataclass
class GaussianReference:
    """The reference loss and where it came from.

    Attributes:
        loss: the Gaussian reference loss under the prior's training objective.
        eigenvalues: eigenvalues of the fitted Gaussian's normalised covariance, float64,
            ascending, ``[d_model]``.
        n_rows: activation rows (summed over ranks) the loss is scored on.
        n_fit_rows: rows the Gaussian was fitted on; equal to ``n_rows`` when scored in-sample.
        data_second_moments: second moment of the scored rows about the fitted mean along each
            eigenvector; None when scored in-sample (then it equals ``eigenvalues``).
    """

    loss: float
    eigenvalues: Float[Tensor, " d_model"]
    n_rows: int
    n_fit_rows: int
    data_second_moments: Float[Tensor, " d_model"] | None = None


@torch.no_grad()
def _normalized_moments(
    prior: DiffusionPrior, activations: Tensor, chunk_size: int
) -> tuple[Float[Tensor, " d_model"], Float[Tensor, "d_model d_model"], int]:
    """Mean and (biased) covariance of ``activations`` after the prior's normalisation, float64.

    Accumulated in chunks; under a process group the sums are all-reduced so every rank gets the
    moments of the union of all ranks' rows.
    """
    if not isinstance(activations, Tensor) or activations.ndim != 2:
        raise ValueError(
            "activations must be a [n, d_model] tensor of raw activations, got "
            f"{getattr(activations, 'shape', type(activations).__name__)}."
        )
    d_model = prior.config.d_model
    if activations.shape[1] != d_model:
        raise ValueError(
            f"activations have width {activations.shape[1]}, the prior models d_model={d_model}."
        )
    normalizer = prior.normalizer
    device = normalizer.mean.device
    mean = normalizer.mean.to(torch.float64)
    std = normalizer.std.to(torch.float64)
    # Normalised rows have mean ~0, so summing about zero is well conditioned, and a fixed shift
    # is what lets every rank's sums be added.
    sums = CovarianceSums(d_model, device, shift=torch.zeros(d_model, dtype=torch.float64))
    for chunk in activations.split(chunk_size):
        sums.update((chunk.to(device, torch.float64) - mean) / std)
    sums.all_reduce()
    n = sums.n
    if n < 2:
        raise ValueError(
            f"The Gaussian reference needs at least 2 activation rows, got {n}; pass more "
            "activations."
        )
    centre, cov = sums.mean_cov()
    return centre, cov, n


def normalized_covariance_eigenvalues(
    prior: DiffusionPrior,
    activations: Float[Tensor, "n d_model"],
    chunk_size: int = 65536,
) -> tuple[Float[Tensor, " d_model"], int]:
    """Eigenvalues (ascending, float64, CPU) of the covariance of ``activations`` after the prior's
    normalisation, and the number of rows (summed over ranks)."""
    _, cov, n = _normalized_moments(prior, activations, chunk_size)
    return torch.linalg.eigvalsh(cov).cpu(), n


def gaussian_reference(
    prior: DiffusionPrior,
    activations: Float[Tensor, "n d_model"],
    fit_activations: Float[Tensor, "m d_model"] | None = None,
    chunk_size: int = 65536,
) -> GaussianReference:
    """The Gaussian reference loss of ``prior``'s objective on ``activations`` (raw space).

    With ``fit_activations`` the Gaussian is fitted on those rows and scored on ``activations``
    (the held-out reference; see the module docstring); without, it is fitted and scored on
    ``activations`` alone (in-sample, biased low when rows are few).
    """
    if fit_activations is None:
        eigenvalues, n_rows = normalized_covariance_eigenvalues(prior, activations, chunk_size)
        # Round-off can leave the smallest eigenvalues a hair below zero.
        eigenvalues = eigenvalues.clamp_min(0.0)
        loss = float(prior.gaussian_reference_loss(eigenvalues))
        return GaussianReference(
            loss=loss, eigenvalues=eigenvalues, n_rows=n_rows, n_fit_rows=n_rows
        )
    fit_mean, fit_cov, n_fit = _normalized_moments(prior, fit_activations, chunk_size)
    mean, cov, n_rows = _normalized_moments(prior, activations, chunk_size)
    eigenvalues, eigenvectors = torch.linalg.eigh(fit_cov)
    offset = mean - fit_mean
    second_moment = cov + torch.outer(offset, offset)
    along = ((eigenvectors.T @ second_moment) * eigenvectors.T).sum(1).clamp_min(0.0).cpu()
    eigenvalues = eigenvalues.clamp_min(0.0).cpu()
    loss = float(prior.gaussian_reference_loss(eigenvalues, along))
    return GaussianReference(
        loss=loss,
        eigenvalues=eigenvalues,
        n_rows=n_rows,
        n_fit_rows=n_fit,
        data_second_moments=along,
    )
