"""Activation steering at a TransformerLens hook, optionally projected back on-manifold by a prior.

    with steer(model, "blocks.15.hook_resid_post", vector, scale=0.25, prior=prior,
               scale_mode="relative", seed=0):  # adds 0.25 x the mean activation norm
        model.generate("I think", max_new_tokens=40, do_sample=False)

or ``handle = attach_steering(...)`` ... ``handle.detach()``.

What the hook does at every steered position (see :mod:`~tl_diffusion_prior.steering.positions`
for which positions those are, with and without the KV cache):

1. add ``delta``: ``scale * vector`` with ``scale_mode="absolute"`` (the default), or
   ``scale * reference_norm * vector / ||vector||`` with ``"relative"`` (a vector of norm ``r``
   times the reference activation norm, whatever the given vector's norm; see
   :func:`~tl_diffusion_prior.steering.config.added_vector`); the whole tensor then passes
   through the new hook point ``<hook>.hook_steered``;
2. with a prior, the steered positions (all of them, in one batched call) are replaced by
   ``prior.denoise(x, t_start, num_steps, noise=...)`` (``denoise_mode="replace"``, the paper's),
   or, with ``denoise_mode="edit"``, by ``h + D(h + delta) - D(h)``: the model's own activation
   ``h`` plus the prior's map of the edit, both denoised with the same noise, so that what the prior
   does to an unsteered activation cancels (twice the prior's work); the whole tensor then passes
   through ``<hook>.hook_denoised``. The noise at a position is a function of the seed, the row's
   tokens up to that position and its position counted from the row's first real token (see
   :mod:`~tl_diffusion_prior.steering.noise`), never of the row's place in the batch or its padding.
   So the same prompt gives the same result alone, twice in one batch or left-padded among others,
   and generation without the KV cache, which recomputes earlier positions at every step, re-noises
   them identically. A ``projection`` (any ``[n, d_model] -> [n, d_model]`` callable, such as an
   SAE's reconstruction or a PCA projection: the linear "manifold" baselines of on-manifold
   steering) can take the prior's place; it adds no noise.

Each row's first real position (BOS / attention sink) and padding are never touched: the hooked
tensor keeps the model's values there, in every hook point.

What each name shows: the steering hook is registered first (``prepend=True``) at the host hook,
so every other hook and cache entry under the host name sees the value the rest of the model
receives (steered, and denoised with a prior). ``<hook>.hook_steered`` shows the activation after
the addition and before denoising, ``<hook>.hook_denoised`` after it; both are full
``[batch, pos, d_model]`` tensors, and hooks on them may edit them (the result is checked).
Without a prior or projection only ``hook_steered`` is added.

Hook bookkeeping: the steering hook is permanent (``is_permanent=True``), so ``model.reset_hooks()``
and the cleanup of ``model.hooks()`` / ``run_with_hooks`` contexts leave it alone, and detaching
removes exactly that one hook, never anyone else's. ``reset_hooks(including_permanent=True)`` does
remove it (``handle.is_active`` then turns False); ``detach`` still cleans up the rest. The
denoised positions carry no gradient (the prior runs under ``no_grad``); plain steering does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor
from transformer_lens.hook_points import HookPoint

from tl_diffusion_prior.capture.hook_names import check_residual_hooks, layer_of
from tl_diffusion_prior.core.lens import (
    LensModel,
    add_child_hook_points,
    add_first_permanent_hook,
    has_child_hook_point,
    has_hook,
    model_kind,
    remove_child_hook_points,
    remove_hook,
)
from tl_diffusion_prior.priors.base import DiffusionPrior
from tl_diffusion_prior.steering.config import SteeringConfig, added_vector, steering_config
from tl_diffusion_prior.steering.noise import MAX_SEED, PositionNoise
from tl_diffusion_prior.steering.positions import PositionTracker

STEERED_HOOK = "hook_steered"
#: A deterministic map of steered activations back onto a "manifold" (see ``projection``).
Projection = Callable[[Tensor], Tensor]
DENOISED_HOOK = "hook_denoised"


class SteeringHandle:
    """A steering attached to a model; :meth:`detach` removes it (also usable with ``with``).

    Attributes:
        hook_name: The host hook.
        steered_hook_name: ``<hook>.hook_steered``.
        denoised_hook_name: ``<hook>.hook_denoised``, or None without a prior or projection.
        alpha: ``scale`` (absolute mode), or ``scale * reference norm`` (relative mode: the norm
            of the vector added).
        delta: The ``[d_model]`` vector added at every steered position (``alpha * vector``, or
            ``alpha * vector / ||vector||`` in relative mode).
        seed: The seed of the denoising noise.
        config: The :class:`SteeringConfig`.
    """

    def __init__(
        self,
        model: LensModel,
        hook_name: str,
        vector: Tensor,
        prior: DiffusionPrior | None,
        config: SteeringConfig,
        alpha: float,
        delta: Tensor,
        seed: int,
        projection: Projection | None = None,
    ) -> None:
        self.model = model
        self.hook_name = hook_name
        self.layer = layer_of(hook_name)
        self.vector = vector
        self.prior = prior
        self.projection = projection
        self.config = config
        self.alpha = alpha
        self.seed = seed
        self.steered_hook_name = f"{hook_name}.{STEERED_HOOK}"
        projects = prior is not None or projection is not None
        self.denoised_hook_name = f"{hook_name}.{DENOISED_HOOK}" if projects else None
        self._host: HookPoint = model.hook_dict[hook_name]
        self.delta = delta
        self._noise = PositionNoise(seed, vector.shape[0], vector.device)
        self._points: dict[str, HookPoint] = {}
        self._lens_handle = None
        self._tracker: PositionTracker | None = None
        self._attached = False

    # ------------------------------------------------------------------- attach / detach
    def _attach(self) -> None:
        succeeded = False
        self._attached = True
        try:
            self._tracker = PositionTracker.acquire(
                self.model, self.layer, keyed=self.prior is not None
            )
            names = [STEERED_HOOK] + ([DENOISED_HOOK] if self.denoised_hook_name else [])
            self._points = add_child_hook_points(self.model, self.hook_name, names)
            self._lens_handle = add_first_permanent_hook(self._host, self._hook)
            succeeded = True
        finally:
            if not succeeded:
                self.detach()

    def detach(self) -> None:
        """Remove the hook, the added hook points and the position tracking. Idempotent."""
        if not self._attached:
            return
        self._attached = False
        try:
            if self._lens_handle is not None:
                remove_hook(self._host, self._lens_handle)
                self._lens_handle = None
        finally:
            try:
                remove_child_hook_points(self.model, self.hook_name, self._points)
                self._points = {}
            finally:
                if self._tracker is not None:
                    self._tracker.release(self.layer, keyed=self.prior is not None)
                    self._tracker = None

    @property
    def is_attached(self) -> bool:
        """True between attaching and :meth:`detach`."""
        return self._attached

    @property
    def is_active(self) -> bool:
        """Attached and its hook still registered (``reset_hooks(including_permanent=True)``
        removes it)."""
        return self._attached and has_hook(self._host, self._lens_handle)

    def __enter__(self) -> SteeringHandle:
        return self

    def __exit__(self, *exc_info) -> None:
        self.detach()

    def __repr__(self) -> str:
        prior = "none" if self.prior is None else type(self.prior).__name__
        return (
            f"SteeringHandle({self.hook_name!r}, alpha={self.alpha:.4g}, prior={prior}, "
            f"positions={self.config.positions!r}, attached={self._attached})"
        )

    # ---------------------------------------------------------------------------- hook
    def _hook(self, activation: Tensor, hook: HookPoint) -> Tensor | None:
        tracker = self._tracker
        if tracker is None or tracker.suspended:
            return None
        self._check_activation(activation)
        batch, n_new, _ = activation.shape
        call = tracker.call_positions(self.layer, batch, n_new)
        mask = call.steer_mask(self.config.positions, activation.device)
        steered = torch.addcmul(activation, mask.unsqueeze(-1).to(activation.dtype), self.delta)
        steered = self._through(self._points[STEERED_HOOK], steered, activation)
        if self.denoised_hook_name is None:
            return steered
        rows, cols = mask.nonzero(as_tuple=True)
        out = steered
        if rows.numel():
            x = steered[rows, cols]
            noise = None
            if self.prior is not None:
                device = activation.device
                noise = self._noise(
                    call.sequence_keys(device)[rows, cols], call.real_positions(device)[rows, cols]
                )
            if self.config.denoise_mode == "edit":
                # Map the steered and the unsteered activation with the same noise; only their
                # difference is added, so the prior's error on the model's own activation (what
                # changes text at r = 0 in "replace" mode) cancels.
                base = activation[rows, cols]
                both = self._project(
                    torch.cat([x, base]), None if noise is None else noise.repeat(2, 1)
                )
                denoised = base + (both[: x.shape[0]] - both[x.shape[0] :])
            else:
                denoised = self._project(x, noise)
            out = steered.index_put((rows, cols), denoised.to(x.device, x.dtype))
        return self._through(self._points[DENOISED_HOOK], out, activation)

    def _project(self, x: Tensor, noise: Tensor | None) -> Tensor:
        """The prior's denoising of ``x`` (with ``noise``), or the projection of ``x``."""
        if self.prior is not None:
            denoised = self.prior.denoise(
                x, self.config.t_start, self.config.num_steps, noise=noise
            )
        else:
            with torch.no_grad():
                denoised = self.projection(x)
        if not isinstance(denoised, Tensor) or denoised.shape != x.shape:
            method = type(self.prior or self.projection).__name__
            got = tuple(denoised.shape) if isinstance(denoised, Tensor) else type(denoised)
            raise ValueError(
                f"{method} returned {got} for input shape {tuple(x.shape)}; a prior or "
                "projection must return a tensor of the input's shape."
            )
        return denoised

    def _check_activation(self, activation: Tensor) -> None:
        if activation.ndim != 3 or activation.shape[-1] != self.delta.shape[0]:
            raise ValueError(
                f"Steering at {self.hook_name!r} needs a [batch, pos, "
                f"d_model={self.delta.shape[0]}] activation, got shape "
                f"{tuple(activation.shape)}; steer a residual-stream hook such as "
                "'blocks.L.hook_resid_post'."
            )
        if activation.dtype != self.delta.dtype or activation.device != self.delta.device:
            raise ValueError(
                f"The activation at {self.hook_name!r} is {activation.dtype} on {activation.device}"
                f" but the steering was attached for {self.delta.dtype} on {self.delta.device}; "
                "the model was moved or cast after attaching: detach and attach again."
            )

    @staticmethod
    def _through(point: HookPoint, value: Tensor, reference: Tensor) -> Tensor:
        result = point(value)
        if (
            not isinstance(result, Tensor)
            or result.shape != reference.shape
            or result.dtype != reference.dtype
            or result.device != reference.device
        ):
            got = (
                f"{tuple(result.shape)} {result.dtype} on {result.device}"
                if isinstance(result, Tensor)
                else type(result).__name__
            )
            raise ValueError(
                f"A hook on {point.name!r} returned {got}; it must return the tensor's shape "
                f"{tuple(reference.shape)}, dtype {reference.dtype} and device {reference.device}."
            )
        return result


def _check_vector(vector: object, d_model: int, dtype: torch.dtype, device: torch.device) -> None:
    if not isinstance(vector, Tensor):
        raise TypeError(f"vector must be a torch.Tensor, got {type(vector).__name__}.")
    if vector.shape != (d_model,):
        raise ValueError(
            f"vector must have shape ({d_model},) (the model's d_model), got "
            f"{tuple(vector.shape)}; steer with one vector at a time, e.g. vector.reshape(-1)."
        )
    if vector.dtype != dtype:
        raise TypeError(
            f"vector has dtype {vector.dtype} but the model runs in {dtype}; pass "
            f"vector.to({dtype})."
        )
    if vector.device != device:
        raise ValueError(
            f"vector is on {vector.device} but the hooked block is on {device}; pass "
            f"vector.to('{device}')."
        )
    if not torch.isfinite(vector).all():
        raise ValueError("vector contains NaN or inf; recompute it.")


def _check_host_hook(model: LensModel, hook_name: str) -> int:
    """Validate that ``hook_name`` can be steered; returns its block's layer."""
    model_kind(model)  # refuses anything but a HookedTransformer or a TransformerBridge
    check_residual_hooks(model, hook_name)  # refuses hooks that are not [batch, pos, d_model]
    if hook_name.endswith((f".{STEERED_HOOK}", f".{DENOISED_HOOK}")):
        raise ValueError(
            f"{hook_name!r} is a hook point added by steering; steer its host hook instead."
        )
    layer = layer_of(hook_name)
    if layer is None:
        raise ValueError(
            f"Steering needs a hook inside a block ('blocks.L....'), got {hook_name!r}; to steer "
            "the embeddings use 'blocks.0.hook_resid_pre'."
        )
    if has_child_hook_point(model, hook_name, STEERED_HOOK):
        raise ValueError(
            f"{hook_name!r} is already steered; detach that steering first, or add the vectors "
            "and steer once."
        )
    return layer


def attach_steering(
    model: LensModel,
    hook_name: str,
    vector: Tensor,
    scale: float | None = None,
    prior: DiffusionPrior | None = None,
    *,
    projection: Any = None,  # a Projection; checked with a clearer error than a type checker's
    config: SteeringConfig | None = None,
    **overrides: Any,
) -> SteeringHandle:
    """Attach steering permanently (until ``handle.detach()``); see the module docstring.

    Args:
        model: The LensModel to steer.
        hook_name: Full hook name inside a block, e.g. ``"blocks.15.hook_resid_post"``.
        vector: A ``[d_model]`` tensor in the hooked block's dtype and on its device.
        scale: ``alpha`` (adds ``alpha * vector``), or with ``scale_mode="relative"`` ``r``
            (adds ``r * reference_norm * vector / ||vector||``); may instead come in ``config``.
        prior: A :class:`DiffusionPrior` trained on ``hook_name`` of this model, or None for plain
            activation addition.
        projection: Instead of a prior, a deterministic ``[n, d_model] -> [n, d_model]`` map
            applied to the steered positions (an SAE's reconstruction, a PCA projection); it runs
            under ``no_grad`` in the model's dtype and device.
        config: A :class:`~tl_diffusion_prior.steering.config.SteeringConfig` with the settings.
        **overrides: Any :class:`~tl_diffusion_prior.steering.config.SteeringConfig` field
            (``t_start``, ``num_steps``, ``positions``, ``seed``, ``scale_mode``,
            ``reference_norm``), replacing ``config``'s.

    Everything is validated before any hook is added: the hook name (with suggestions), the
    vector's shape, dtype and device, the prior's hook, width and model, and the config. (Plain
    ``Tensor``/``str`` annotations: these checks give better errors than a type checker.)
    """
    layer = _check_host_hook(model, hook_name)
    config = steering_config(scale, config, overrides)
    block_parameter = next(model.blocks[layer].parameters())
    _check_vector(vector, model.cfg.d_model, block_parameter.dtype, block_parameter.device)
    if projection is not None and (prior is not None or not callable(projection)):
        raise TypeError(
            "projection must be a callable [n, d_model] -> [n, d_model] tensor map, and cannot be "
            "combined with a prior; pass one of prior= or projection=."
        )
    if prior is not None:
        if not isinstance(prior, DiffusionPrior):
            raise TypeError(f"prior must be a DiffusionPrior or None, got {type(prior).__name__}.")
        prior.check_compatible(
            hook_name=hook_name,
            d_model=model.cfg.d_model,
            model_name=model.cfg.model_name,
            model=model,
        )
    alpha, delta = added_vector(vector, config, prior)
    resolved_seed = (
        config.seed
        if config.seed is not None
        else int(torch.randint(0, MAX_SEED, (), dtype=torch.int64))
    )
    handle = SteeringHandle(
        model, hook_name, vector, prior, config, alpha, delta, resolved_seed, projection
    )
    handle._attach()
    return handle


@contextlib.contextmanager
def steer(
    model: LensModel,
    hook_name: str,
    vector: Tensor,
    scale: float | None = None,
    prior: DiffusionPrior | None = None,
    *,
    projection: Any = None,  # a Projection; checked with a clearer error than a type checker's
    config: SteeringConfig | None = None,
    **overrides: Any,
) -> Iterator[SteeringHandle]:
    """Context-manager form of :func:`attach_steering`; detaches on exit, even after an error."""
    handle = attach_steering(
        model, hook_name, vector, scale, prior, projection=projection, config=config, **overrides
    )
    try:
        yield handle
    finally:
        handle.detach()
