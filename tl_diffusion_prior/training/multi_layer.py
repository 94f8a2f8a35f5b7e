"""Training one prior over several layers: which buffer hooks it reads, and its references.

A multi-layer :class:`~tl_diffusion_prior.priors.glp.GLPPrior` (no layer picked) trains on buffer
rows of all its hooks at once, ``[batch, layers, d_model]``; the trainer passes the hooks' buffer
indices wherever a single-layer run passes one index (batches, normalisation, validation rows).
Its Gaussian reference is the mean over layers of each layer's own reference, each a Gaussian
fitted on that layer's training rows and scored on its held-out rows, in that layer's normalised
space: the multi-layer validation loss is the mean of the per-layer losses, so the two compare.
:func:`~tl_diffusion_prior.training.validation.per_layer_scores` gives the per-layer numbers, for
any prior trained on one of the layers too, so one multi-layer prior and several single-layer ones
are scored alike.
"""

from __future__ import annotations

from jaxtyping import Float
from torch import Tensor

from tl_diffusion_prior.capture.buffer import ActivationRingBuffer
from tl_diffusion_prior.priors.base import DiffusionPrior
from tl_diffusion_prior.priors.glp import GLPPrior
from tl_diffusion_prior.training.gaussian_reference import gaussian_reference


def multi_layer_hooks(prior: DiffusionPrior) -> tuple[str, ...] | None:
    """The hooks a multi-layer prior with no layer picked trains on; None for any other prior."""
    if isinstance(prior, GLPPrior) and prior.is_multi_layer and prior.config.layer is None:
        return prior.layer_hooks
    return None


def resolve_multi_layer_hooks(
    buffer: ActivationRingBuffer, prior: DiffusionPrior, hook: str | int | None
) -> tuple[int, ...] | None:
    """The buffer indices of a multi-layer prior's hooks (in its layer order), or None for a
    single-layer prior; a clear error when the buffer lacks one or ``hook`` picks one."""
    hooks = multi_layer_hooks(prior)
    if hooks is None:
        return None
    if hook is not None:
        raise ValueError(
            f"hook={hook!r} picks one buffer hook, but this multi-layer prior trains on all of "
            f"{list(hooks)}; leave hook unset (or train prior.at_layer(L) on one layer)."
        )
    missing = [h for h in hooks if h not in buffer.hook_names]
    if missing:
        raise ValueError(
            f"The multi-layer prior covers {list(hooks)}, but the buffer holds "
            f"{list(buffer.hook_names)} (missing {missing}); capture every hook of the prior into "
            "one buffer: ActivationRingBuffer(n, d_model, prior.layer_hooks) and fill_buffer."
        )
    return tuple(buffer.hook_names.index(h) for h in hooks)


def layer_views(prior: DiffusionPrior, n_layers: int) -> list[DiffusionPrior]:
    """A multi-layer prior's single-layer views in its layer order (``prior.at_layer(L)``)."""
    if multi_layer_hooks(prior) is None:
        raise ValueError(f"Expected an unpicked multi-layer prior, got {type(prior).__name__}.")
    views = [prior.at_layer(layer) for layer in prior.config.layers]
    if len(views) != n_layers:
        raise ValueError(f"The rows hold {n_layers} layers, the prior covers {len(views)}.")
    return views


def multi_layer_reference(
    prior: DiffusionPrior,
    rows: Float[Tensor, "n layers d_model"],
    fit_rows: Float[Tensor, "m layers d_model"],
) -> float:
    """Mean over layers of each layer's held-out Gaussian reference (see the module docstring)."""
    views = layer_views(prior, rows.shape[1])
    losses = [
        gaussian_reference(view, rows[:, i], fit_activations=fit_rows[:, i]).loss
        for i, view in enumerate(views)
    ]
    return sum(losses) / len(losses)
