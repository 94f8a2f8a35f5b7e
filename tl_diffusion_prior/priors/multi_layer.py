"""Build a trainable :class:`~tl_diffusion_prior.priors.glp.GLPPrior` for one or several hooks.

One prior over several residual-stream layers is the paper's multi-layer GLP: the same network for
every layer, told which layer it denoises by a layer embedding added to its timestep embedding, and
each layer z-scored with its own statistics. :func:`glp_prior_for_hooks` builds one from the hook
names it should cover (``blocks.L.hook_resid_post`` for several ``L``); with a single hook it builds
the single-layer prior of the same architecture, the like-for-like baseline. Train either with
:func:`~tl_diffusion_prior.training.trainer.train_prior` on a buffer that captured those hooks,
then use ``prior.at_layer(L)`` (or ``prior.at_hook(hook)``) wherever a single-layer prior goes:
denoising, sampling, scoring and :func:`~tl_diffusion_prior.steering.steer.steer`.

Why the GLP architecture rather than :class:`~tl_diffusion_prior.priors.mlp.MLPPrior`: it already
has the layer embedding, per-layer statistics and single-layer views, and a prior trained here has
the released priors' layout. It has no Gaussian skip: that fit is a ``d x d`` eigenbasis per layer,
and a batch mixing layers would need one per row group; the multi-layer network starts at velocity 0
instead (like the MLP prior without its skip). bf16 autocast applies as for every prior (the
trainer's ``autocast``); the statistics stay float32.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from tl_diffusion_prior.core.validation import check_int, check_positive_int
from tl_diffusion_prior.priors.glp import ANY_LAYER, GLPPrior, GLPPriorConfig, hook_for_layer

__all__ = ["glp_prior_for_hooks", "layers_of_hooks"]

_RESID_HOOK = re.compile(r"blocks\.(\d+)\.(hook_resid_post|hook_resid_pre)")


def layers_of_hooks(hook_names: Sequence[str]) -> tuple[tuple[int, ...], str]:
    """``(layers, point)`` of residual hooks ``blocks.L.<point>`` that all share one point."""
    if isinstance(hook_names, str) or not hook_names:
        raise ValueError(f"hook_names must be a non-empty list of hook names, got {hook_names!r}.")
    matches = [_RESID_HOOK.fullmatch(h) if isinstance(h, str) else None for h in hook_names]
    bad = [h for h, m in zip(hook_names, matches, strict=True) if m is None]
    if bad:
        raise ValueError(
            f"A GLP prior models blocks.L.hook_resid_post (or hook_resid_pre) hooks, got {bad}."
        )
    points = sorted({m.group(2) for m in matches})
    if len(points) > 1:
        raise ValueError(f"All hooks must be the same point of their block, got {points}.")
    layers = tuple(int(m.group(1)) for m in matches)
    if list(layers) != sorted(set(layers)):
        raise ValueError(
            f"List each layer once, shallowest first, got layers {list(layers)}; e.g. "
            f"{[hook_for_layer(layer, points[0]) for layer in sorted(set(layers))]}."
        )
    return layers, points[0]


def glp_prior_for_hooks(
    hook_names: Sequence[str],
    *,
    d_model: int,
    model_name: str,
    n_model_layers: int | None = None,
    depth: int = 3,
    d_hidden: int | None = None,
    d_mlp: int | None = None,
    norm_eps: float = 1e-5,
    sample_steps: int = 20,
) -> GLPPrior:
    """A fresh (untrained) GLP prior over ``hook_names``: multi-layer for two or more hooks.

    Args:
        hook_names: ``blocks.L.hook_resid_post`` (or all ``hook_resid_pre``), shallowest first.
        d_model: The model's residual width.
        model_name: The source model's name (``model.cfg.model_name``).
        n_model_layers: The model's number of blocks (``model.cfg.n_layers``): the layer embedding
            reads ``L / (n_model_layers - 1)``, the layer's true relative depth. Default: the
            deepest hook's ``L + 1``.
        depth: Gated residual blocks of the network.
        d_hidden: Width of the network's residual stream and time/layer embedding; default
            ``2 * d_model`` (the release's and the MLP prior's).
        d_mlp: Hidden size of each block's gated MLP; default ``2 * d_model`` (the MLP prior's
            CPU size; the release uses ``4 * d_model``).
        norm_eps: Normaliser epsilon, ``std = sqrt(var + eps)``: 1e-5 as for the MLP prior, so a
            dead dimension does not blow up (the release's checkpoints use 1e-30).
        sample_steps: Euler steps :meth:`~GLPPrior.sample` takes by default.
    """
    layers, point = layers_of_hooks(hook_names)
    check_positive_int("d_model", d_model)
    positions = None
    if len(layers) > 1:
        positions = layers[-1] + 1 if n_model_layers is None else n_model_layers
        check_int("n_model_layers", positions, minimum=layers[-1] + 1)
    config = GLPPriorConfig(
        d_model=d_model,
        hook_name=hook_for_layer(layers[0] if positions is None else ANY_LAYER, point),
        model_name=model_name,
        norm_eps=norm_eps,
        d_hidden=2 * d_model if d_hidden is None else d_hidden,
        d_mlp=2 * d_model if d_mlp is None else d_mlp,
        depth=depth,
        layers=layers,
        layer_positions=positions,
        sample_steps=sample_steps,
    )
    return GLPPrior(config)
