"""The multi-layer half of :class:`~tl_diffusion_prior.priors.glp.GLPPrior`: per-layer statistics
and the training loss over rows that hold every covered layer.

A multi-layer prior is one network conditioned on the layer (the release's ``layer_embed`` of the
depth ``L / (layer_positions - 1)``). Training reads rows of a buffer that captured all its hooks at
once, ``[batch, layers, d_model]``: each layer is z-scored with its own statistics (activations grow
by orders of magnitude with depth, so one shared normaliser would leave the shallow layers near
zero), then :func:`multi_layer_loss` draws one layer per row, so a step costs what a single-layer
step of the same batch costs and every layer gets ``1 / layers`` of the rows on average.

Validation instead scores every layer of every row at the row's fixed noise level: the estimate is
then exactly the mean of the per-layer losses, which is what the mean of the per-layer Gaussian
references is compared with.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from tl_diffusion_prior.core.normalizer import Float32BuffersMixin
from tl_diffusion_prior.core.validation import check_noise_levels
from tl_diffusion_prior.priors.base import DiffusionPrior


class LayerStatistics(Float32BuffersMixin):
    """Every covered layer's normaliser mean and ``std = sqrt(var + eps)``, float32, [layers, d]."""

    mean: Tensor
    std: Tensor

    def __init__(self, n_layers: int, d_model: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("mean", torch.zeros(n_layers, d_model))
        self.register_buffer("std", torch.ones(n_layers, d_model))

    def set_stats(self, mean: Tensor, var: Tensor) -> None:
        """Set each layer's mean and population variance, ``[layers, d_model]`` in the prior's
        ``layers`` order (checked here with errors that say what to fix, so not annotated)."""
        for name, value in (("mean", mean), ("var", var)):
            if not isinstance(value, Tensor) or not value.is_floating_point():
                raise TypeError(f"Per-layer {name} must be a float tensor, got {type(value)}.")
        if mean.shape != self.mean.shape or var.shape != self.mean.shape:
            raise ValueError(
                f"Per-layer mean and var must have shape {tuple(self.mean.shape)} (layers, "
                f"d_model), got {tuple(mean.shape)} and {tuple(var.shape)}."
            )
        if not bool(torch.isfinite(mean).all() & torch.isfinite(var).all() & (var >= 0).all()):
            raise ValueError("Per-layer mean/var hold NaN/inf or a negative variance; recompute.")
        with torch.no_grad():
            self.mean.copy_(mean.detach().double())
            self.std.copy_(torch.sqrt(var.detach().double() + self.eps))


def check_rows(
    x: object, levels: object, n_layers: int, d_model: int, hooks: tuple[str, ...]
) -> None:
    """Refuse rows that are not ``[batch, layers, d_model]`` floats, or bad ``levels``."""
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a float tensor, got {type(x).__name__}.")
    if x.ndim != 3 or x.shape[1:] != (n_layers, d_model):
        raise ValueError(
            f"A multi-layer prior's loss takes rows of every covered layer, [batch, {n_layers}, "
            f"{d_model}] (hooks {list(hooks)}, in that order), got {tuple(x.shape)}; sample a "
            "buffer that captured those hooks, or pick one layer with at_layer(L)."
        )
    check_noise_levels(levels, x.shape[0])


def multi_layer_loss(
    prior: DiffusionPrior,
    x: Float[Tensor, "batch layers d_model"],
    generator: torch.Generator | None,
    levels: Float[Tensor, " batch"] | None,
) -> Float[Tensor, ""]:
    """The flow loss of an unpicked multi-layer ``GLPPrior`` on RAW rows of all its layers.

    Without ``levels`` (training) each row contributes one layer, drawn uniformly with
    ``generator`` before its noise level and noise; with ``levels`` (validation) every layer of
    each row is scored at that row's level, so the result is the mean of the per-layer losses.
    The caller has checked ``x`` and ``levels`` (:func:`check_rows`).
    """
    cfg, stats = prior.config, prior.layer_stats
    device = stats.mean.device
    z = (x.to(device, torch.float32) - stats.mean) / stats.std  # each layer its own z-score
    depths = torch.tensor(cfg.layers, dtype=torch.float32, device=device)
    depths = depths / (cfg.layer_positions - 1)  # the release's L / (multi_layer_n_layers - 1)
    batch, n_layers = z.shape[:2]
    if levels is None:
        picked = torch.randint(n_layers, (batch,), generator=generator, device=device)
        z, layer_depth = z[torch.arange(batch, device=device), picked], depths[picked]
    else:
        z, layer_depth = z.reshape(batch * n_layers, -1), depths.repeat(batch)
        levels = levels.to(device, torch.float32).repeat_interleave(n_layers)
    return prior._loss_normalized(z.to(prior.dtype), generator, levels, layer_depth)
