"""What a training run is validated on: fixed rows, fixed noise, and the Gaussian reference.

The validation loss is that of the EMA weights (copied into a scratch copy of the prior) on the
same rows with the same noise at every evaluation, so its changes come from the weights alone. The
Gaussian reference is a Gaussian fitted on training rows and scored on the validation rows (see
:mod:`~tl_diffusion_prior.training.gaussian_reference`); a resumed run keeps the one its first
session computed.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from tl_diffusion_prior.capture.buffer import ActivationRingBuffer
from tl_diffusion_prior.core import distributed
from tl_diffusion_prior.priors.base import DiffusionPrior
from tl_diffusion_prior.training.config import TrainConfig
from tl_diffusion_prior.training.gaussian_reference import gaussian_reference
from tl_diffusion_prior.training.multi_layer import multi_layer_reference
from tl_diffusion_prior.training.runtime import autocast, derive_seed


@dataclass(eq=False)
class Validation:
    """The fixed parts of every validation of a run.

    Attributes:
        rows: raw activations the loss is measured on, ``[n, d_model]``.
        reference: the Gaussian reference loss on those rows.
        scratch: a copy of the prior in eval mode, which receives the weights to validate.
    """

    rows: Float[Tensor, "n d_model"] | Float[Tensor, "n layers d_model"]
    reference: float
    scratch: DiffusionPrior


def setup_validation(
    prior: DiffusionPrior,
    buffer: ActivationRingBuffer,
    hook: int | tuple[int, ...],
    config: TrainConfig,
    val_activations: Tensor | None,
    fit_rows: Tensor | None,
    saved_reference: float | None,
) -> Validation:
    """Rows and reference for ``prior``'s run; ``saved_reference`` is a resumed run's reference.

    ``fit_rows`` are the training rows the reference's Gaussian is fitted on (unused when
    resuming). A multi-layer run (``hook`` a tuple of buffer indices) has ``[n, layers, d_model]``
    rows and the mean of the per-layer references.
    """
    scratch = copy.deepcopy(prior).eval()
    rows = validation_rows(buffer, hook, val_activations, config, distributed.get_rank())
    if saved_reference is not None:
        reference = float(saved_reference)
    elif isinstance(hook, tuple):
        reference = multi_layer_reference(prior, rows, fit_rows)
    else:
        reference = gaussian_reference(prior, rows, fit_activations=fit_rows).loss
    return Validation(rows=rows, reference=reference, scratch=scratch)


def validation_rows(
    buffer: ActivationRingBuffer,
    hook: int | tuple[int, ...],
    val_activations: Tensor | None,
    config: TrainConfig,
    rank: int,
) -> Tensor:
    """The first ``config.val_size`` held-out rows, or as many buffer rows (a fixed draw).

    ``hook`` a tuple (a multi-layer run): rows of those hooks, ``[n, len(hook), d_model]``.
    """
    if val_activations is None:
        seed = derive_seed(config.seed, rank, 3)
        generator = torch.Generator(device=buffer.device).manual_seed(seed)
        return buffer.sample(config.val_size, generator=generator, hook=hook).clone()
    tail = (len(hook), buffer.d_model) if isinstance(hook, tuple) else (buffer.d_model,)
    expected = ", ".join(map(str, ("n", *tail)))
    if not isinstance(val_activations, Tensor) or val_activations.ndim != 1 + len(tail):
        raise ValueError(
            f"val_activations must be a [{expected}] tensor of held-out raw activations, got "
            f"{getattr(val_activations, 'shape', type(val_activations).__name__)}."
        )
    if val_activations.shape[1:] != tail or val_activations.shape[0] < 2:
        raise ValueError(
            f"val_activations must be [{expected}] with n >= 2, got {tuple(val_activations.shape)}."
        )
    return val_activations[: config.val_size]


@torch.no_grad()
def validation_loss(
    prior: DiffusionPrior, rows: Tensor, config: TrainConfig, device: torch.device
) -> float:
    """``prior``'s mean loss on ``rows``, over all ranks, with the same noise at every call."""
    # The same seed at every evaluation: changes in val loss come from the weights, not the noise.
    # Noise levels are stratified (evenly spread quantiles, shuffled over the rows), which removes
    # most of the estimate's variance: the loss depends far more on the level than on the row.
    generator = torch.Generator(device=device).manual_seed(derive_seed(config.seed, 7919))
    n = rows.shape[0]
    order = torch.randperm(n, generator=generator, device=device)
    levels = (order.double() + 0.5) / n
    total = torch.zeros((), dtype=torch.float64, device=device)
    with autocast(config, device):
        for chunk, chunk_levels in zip(
            rows.split(config.batch_size), levels.split(config.batch_size), strict=True
        ):
            loss = prior.loss(
                chunk.to(device, non_blocking=True),
                generator=generator,
                levels=chunk_levels.float(),
            )
            total += loss.double() * chunk.shape[0]
    count = torch.tensor(float(rows.shape[0]), dtype=torch.float64, device=device)
    packed = distributed.all_reduce_sum(torch.stack([total, count]))
    return float(packed[0] / packed[1])


@dataclass
class LayerScore:
    """One layer's held-out loss against its Gaussian reference.

    Attributes:
        hook_name: the layer's hook.
        val_loss: the prior's loss on the held-out rows (fixed, stratified noise levels).
        gaussian_reference: the Gaussian fitted on the training rows, scored on the held-out ones.
    """

    hook_name: str
    val_loss: float
    gaussian_reference: float

    @property
    def ratio(self) -> float:
        """``val_loss / gaussian_reference``: below 1 beats every Gaussian model of the layer."""
        return self.val_loss / self.gaussian_reference


def per_layer_scores(
    priors: list[DiffusionPrior],
    val_rows: Float[Tensor, "n layers d_model"],
    fit_rows: Float[Tensor, "m layers d_model"],
    config: TrainConfig,
) -> list[LayerScore]:
    """Each layer's :class:`LayerScore`: ``priors[i]`` (single-layer, or a view) on layer ``i``.

    Pass ``layer_views(prior, n_layers)`` for a multi-layer prior, or one single-layer prior per
    layer; the loss is the trainer's validation loss (same seed, stratified levels).
    """
    if len(priors) != val_rows.shape[1] or fit_rows.shape[1] != val_rows.shape[1]:
        raise ValueError(
            f"Need one prior per layer of the rows: {len(priors)} priors, rows of "
            f"{val_rows.shape[1]} and {fit_rows.shape[1]} layers."
        )
    scores = []
    for i, prior in enumerate(priors):
        with torch.no_grad():
            loss = validation_loss(prior, val_rows[:, i], config, prior.device)
        reference = gaussian_reference(prior, val_rows[:, i], fit_activations=fit_rows[:, i])
        scores.append(LayerScore(prior.config.hook_name, loss, reference.loss))
    return scores
