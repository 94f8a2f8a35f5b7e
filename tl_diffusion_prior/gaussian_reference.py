"""The Gaussian reference loss: what a prior would reach if it only knew the data's covariance.

The optimal denoiser for a Gaussian with the data's covariance has a closed-form loss under each
prior's objective (``DiffusionPrior.gaussian_reference_loss``), which depends only on the
eigenvalues of the covariance of the *normalised* activations. A held-out loss below this
reference means the prior has learned structure beyond second-order statistics; a loss above it
means it has not yet learned even the covariance.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from tl_diffusion_prior import distributed
from tl_diffusion_prior.priors.base import DiffusionPrior


@dataclass
class GaussianReference:
    """The reference loss and where it came from.

    Attributes:
        loss: the Gaussian reference loss under the prior's training objective.
        eigenvalues: eigenvalues of the normalised covariance, float64, ascending, ``[d_model]``.
        n_rows: number of activation rows (summed over ranks) the covariance was estimated from.
    """

    loss: float
    eigenvalues: Float[Tensor, " d_model"]
    n_rows: int


@torch.no_grad()
def normalized_covariance_eigenvalues(
    prior: DiffusionPrior,
    activations: Float[Tensor, "n d_model"],
    chunk_size: int = 65536,
) -> tuple[Float[Tensor, " d_model"], int]:
    """Eigenvalues of the covariance of ``activations`` after the prior's normalisation.

    Accumulated in float64 in chunks; under a process group the sums are all-reduced so every rank
    gets the eigenvalues of the union of all ranks' rows. Returns ``(eigenvalues, n_rows)``.
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
    count = torch.zeros((), dtype=torch.float64, device=device)
    total = torch.zeros(d_model, dtype=torch.float64, device=device)
    outer = torch.zeros(d_model, d_model, dtype=torch.float64, device=device)
    for chunk in activations.split(chunk_size):
        z = (chunk.to(device, torch.float64) - mean) / std
        count += z.shape[0]
        total += z.sum(0)
        outer += z.T @ z
    packed = distributed.all_reduce_sum(torch.cat([count.reshape(1), total, outer.reshape(-1)]))
    n = int(packed[0].item())
    if n < 2:
        raise ValueError(
            f"The Gaussian reference needs at least 2 activation rows, got {n}; pass more "
            "held-out activations."
        )
    total = packed[1 : 1 + d_model]
    outer = packed[1 + d_model :].reshape(d_model, d_model)
    centre = total / n
    cov = outer / n - torch.outer(centre, centre)
    cov = (cov + cov.T) / 2
    return torch.linalg.eigvalsh(cov).cpu(), n


def gaussian_reference(
    prior: DiffusionPrior,
    activations: Float[Tensor, "n d_model"],
    chunk_size: int = 65536,
) -> GaussianReference:
    """The Gaussian reference loss of ``prior``'s objective on ``activations`` (raw space)."""
    eigenvalues, n_rows = normalized_covariance_eigenvalues(prior, activations, chunk_size)
    # Round-off can leave the smallest eigenvalues a hair below zero.
    eigenvalues = eigenvalues.clamp_min(0.0)
    loss = float(prior.gaussian_reference_loss(eigenvalues))
    return GaussianReference(loss=loss, eigenvalues=eigenvalues, n_rows=n_rows)
