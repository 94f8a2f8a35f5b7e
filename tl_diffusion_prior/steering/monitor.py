"""The manifold score of every token as a hook point: ``<hook>.hook_manifold_score``.

    with monitor(model, "blocks.15.hook_resid_post", prior):
        logits, cache = model.run_with_cache(tokens)
    cache["blocks.15.hook_resid_post.hook_manifold_score"]  # [batch, pos], float32

or ``handle = attach_monitor(...)`` ... ``handle.detach()``. The score is
:func:`~tl_diffusion_prior.priors.score.manifold_score` (the prior's denoising error at a few fixed
noise levels; :class:`~tl_diffusion_prior.priors.score.ScoreConfig` sets method, levels and seed):
one prior evaluation per level per token, on top of the model's own forward pass.

What the monitor adds, and what it never does:

* ``<hook>.hook_manifold_score``, a ``[batch, pos]`` float32 tensor on the activation's device,
  is the score of the activation the rest of the model receives: the monitor's hook runs after the
  hooks already on the host when it attaches, and after steering (which always runs first), so
  under ``steer(...)`` it scores the steered (and, with a prior, denoised) activation. Hooks added
  later (``run_with_hooks``) run after it and are not seen.
* ``<hook>.hook_steered_manifold_score`` (only when the host is already steered when the monitor
  attaches: ``with steer(...): with monitor(...):``) is the score of ``<hook>.hook_steered``,
  the activation after the addition and before the prior's denoising, at the same cost again.
* Each row's first real position (BOS, the attention sink the prior never saw) and padding get
  NaN: they are not scored, as steering never touches them.
* The hooks return None: the model's outputs, the cache entries of every other hook and the
  random state (the noise is hashed, not drawn) are unchanged.
* The noise of a token is keyed by the seed, the row's content up to the token and its position
  counted from the row's first real token (the keys steering uses, from
  :mod:`~tl_diffusion_prior.steering.positions`), so a token scores the same alone, in any batch,
  after left padding, and with or without the KV cache (where each generation step scores only
  its new position): up to the rounding that makes a cached activation differ from a recomputed
  one.

Hook bookkeeping follows steering: permanent hooks (``reset_hooks()`` leaves them), removed on
exit, after an exception and on :meth:`MonitorHandle.detach` (idempotent), together with the added
hook points and the position tracking. The score carries no gradient.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens.hook_points import HookPoint

from tl_diffusion_prior.capture.hook_names import check_residual_hooks, layer_of
from tl_diffusion_prior.core.lens import (
    LensModel,
    add_child_hook_points,
    add_last_permanent_hook,
    has_child_hook_point,
    has_hook,
    model_kind,
    remove_child_hook_points,
    remove_hook,
)
from tl_diffusion_prior.priors.base import DiffusionPrior
from tl_diffusion_prior.priors.score import (
    ScoreConfig,
    ScoreNoise,
    as_score_config,
    check_score_method,
    manifold_score,
)
from tl_diffusion_prior.steering.positions import PositionTracker
from tl_diffusion_prior.steering.steer import DENOISED_HOOK, STEERED_HOOK

SCORE_HOOK = "hook_manifold_score"
STEERED_SCORE_HOOK = "hook_steered_manifold_score"
_ADDED_HOOKS = (STEERED_HOOK, DENOISED_HOOK, SCORE_HOOK, STEERED_SCORE_HOOK)


class MonitorHandle:
    """A monitor attached to a model; :meth:`detach` removes it (also usable with ``with``).

    Attributes:
        hook_name: The host hook.
        score_hook_name: ``<hook>.hook_manifold_score``.
        steered_score_hook_name: ``<hook>.hook_steered_manifold_score``, or None when the host
            was not steered when the monitor attached.
        prior: The prior that scores.
        config: The :class:`~tl_diffusion_prior.priors.score.ScoreConfig`.
    """

    def __init__(
        self, model: LensModel, hook_name: str, prior: DiffusionPrior, config: ScoreConfig
    ) -> None:
        self.model = model
        self.hook_name = hook_name
        self.layer = layer_of(hook_name)
        self.prior = prior
        self.config = config
        self.score_hook_name = f"{hook_name}.{SCORE_HOOK}"
        steered = has_child_hook_point(model, hook_name, STEERED_HOOK)
        self.steered_score_hook_name = f"{hook_name}.{STEERED_SCORE_HOOK}" if steered else None
        block_parameter = next(model.blocks[self.layer].parameters())
        self._noise = ScoreNoise(config, prior.config.d_model, block_parameter.device)
        self._points: dict[str, HookPoint] = {}
        self._hooks: list[tuple[HookPoint, object]] = []
        self._tracker: PositionTracker | None = None
        self._attached = False

    # ------------------------------------------------------------------- attach / detach
    def _attach(self) -> None:
        succeeded = False
        self._attached = True
        try:
            self._tracker = PositionTracker.acquire(self.model, self.layer, keyed=True)
            names = [SCORE_HOOK] + ([STEERED_SCORE_HOOK] if self.steered_score_hook_name else [])
            self._points = add_child_hook_points(self.model, self.hook_name, names)
            host = self.model.hook_dict[self.hook_name]
            self._add_hook(host, lambda act, hook: self._score(act, SCORE_HOOK))
            if self.steered_score_hook_name is not None:
                steered = self.model.hook_dict[f"{self.hook_name}.{STEERED_HOOK}"]
                self._add_hook(steered, lambda act, hook: self._score(act, STEERED_SCORE_HOOK))
            succeeded = True
        finally:
            if not succeeded:
                self.detach()

    def _add_hook(self, point: HookPoint, hook) -> None:
        self._hooks.append((point, add_last_permanent_hook(point, hook)))

    def detach(self) -> None:
        """Remove the hooks, the added hook points and the position tracking. Idempotent."""
        if not self._attached:
            return
        self._attached = False
        try:
            while self._hooks:
                point, handle = self._hooks.pop()
                if has_hook(point, handle):
                    remove_hook(point, handle)
        finally:
            try:
                remove_child_hook_points(self.model, self.hook_name, self._points)
                self._points = {}
            finally:
                if self._tracker is not None:
                    self._tracker.release(self.layer, keyed=True)
                    self._tracker = None

    @property
    def is_attached(self) -> bool:
        """True between attaching and :meth:`detach`."""
        return self._attached

    @property
    def is_active(self) -> bool:
        """Attached and its hooks still registered (``reset_hooks(including_permanent=True)``
        removes them)."""
        return self._attached and all(has_hook(point, handle) for point, handle in self._hooks)

    def __enter__(self) -> MonitorHandle:
        return self

    def __exit__(self, *exc_info) -> None:
        self.detach()

    def __repr__(self) -> str:
        return (
            f"MonitorHandle({self.hook_name!r}, prior={type(self.prior).__name__}, "
            f"method={self.config.method!r}, levels={self.config.levels}, "
            f"attached={self._attached})"
        )

    # ---------------------------------------------------------------------------- hook
    def _score(self, activation: Tensor, child: str) -> None:
        tracker = self._tracker
        if tracker is None:
            return None
        if activation.ndim != 3 or activation.shape[-1] != self.prior.config.d_model:
            raise ValueError(
                f"The monitor at {self.hook_name!r} needs a [batch, pos, d_model="
                f"{self.prior.config.d_model}] activation, got shape {tuple(activation.shape)}."
            )
        batch, n_new, _ = activation.shape
        call = tracker.call_positions(self.layer, batch, n_new)
        device = activation.device
        # The positions steering may touch are the ones the prior models: real tokens but each
        # row's first (the BOS / attention sink).
        rows, cols = call.steer_mask("all", device).nonzero(as_tuple=True)
        scores = torch.full((batch, n_new), float("nan"), dtype=torch.float32, device=device)
        if rows.numel():
            noise = self._noise.for_tokens(
                call.sequence_keys(device)[rows, cols], call.real_positions(device)[rows, cols]
            )
            values = manifold_score(self.prior, activation[rows, cols], self.config, noise)
            scores = scores.index_put((rows, cols), values.to(device))
        _check_through(self._points[child], scores)
        return None


def _check_through(point: HookPoint, scores: Float[Tensor, "batch pos"]) -> None:
    """Run ``scores`` through ``point`` (its hooks and cache see them); a hook there may edit
    them but must keep their shape, dtype and device."""
    result = point(scores)
    if not isinstance(result, Tensor) or (result.shape, result.dtype, result.device) != (
        scores.shape,
        scores.dtype,
        scores.device,
    ):
        got = (
            f"{tuple(result.shape)} {result.dtype} on {result.device}"
            if isinstance(result, Tensor)
            else type(result).__name__
        )
        raise ValueError(
            f"A hook on {point.name!r} returned {got}; it must return the scores' shape "
            f"{tuple(scores.shape)}, dtype {scores.dtype} and device {scores.device}."
        )


def _check_monitor_hook(model: LensModel, hook_name: str) -> None:
    model_kind(model)  # refuses anything but a HookedTransformer or a TransformerBridge
    if hook_name.endswith(tuple(f".{name}" for name in _ADDED_HOOKS)):
        raise ValueError(
            f"{hook_name!r} is a hook point added by steering or monitoring; monitor its host "
            "hook instead (the monitor also scores <hook>.hook_steered when the host is steered)."
        )
    check_residual_hooks(model, hook_name)  # refuses hooks that are not [batch, pos, d_model]
    if layer_of(hook_name) is None:
        raise ValueError(
            f"The monitor needs a hook inside a block ('blocks.L....'), got {hook_name!r}."
        )
    if has_child_hook_point(model, hook_name, SCORE_HOOK):
        raise ValueError(f"{hook_name!r} is already monitored; detach that monitor first.")


def attach_monitor(
    model: LensModel,
    hook_name: str,
    prior: DiffusionPrior,
    method: str | ScoreConfig = "elbo",
    *,
    levels: Sequence[float] | None = None,
    seed: int = 0,
) -> MonitorHandle:
    """Attach a monitor permanently (until ``handle.detach()``); see the module docstring.

    Args:
        model: The LensModel to monitor.
        hook_name: Full residual hook name inside a block, e.g. ``"blocks.15.hook_resid_post"``.
        prior: A :class:`DiffusionPrior` trained on ``hook_name`` of this model.
        method, levels, seed: The score's settings: a method name with its levels and seed, or a
            whole :class:`~tl_diffusion_prior.priors.score.ScoreConfig` as ``method``.

    Everything is checked before any hook is added: the hook name, the prior's hook, width and
    model, and the score's settings.
    """
    _check_monitor_hook(model, hook_name)
    if not isinstance(prior, DiffusionPrior):
        raise TypeError(f"prior must be a DiffusionPrior, got {type(prior).__name__}.")
    prior.check_compatible(
        hook_name=hook_name, d_model=model.cfg.d_model, model_name=model.cfg.model_name, model=model
    )
    config = as_score_config(method, levels, seed)
    check_score_method(prior, config)
    handle = MonitorHandle(model, hook_name, prior, config)
    handle._attach()
    return handle


@contextlib.contextmanager
def monitor(
    model: LensModel,
    hook_name: str,
    prior: DiffusionPrior,
    method: str | ScoreConfig = "elbo",
    *,
    levels: Sequence[float] | None = None,
    seed: int = 0,
) -> Iterator[MonitorHandle]:
    """Context-manager form of :func:`attach_monitor`; detaches on exit, even after an error."""
    handle = attach_monitor(model, hook_name, prior, method, levels=levels, seed=seed)
    try:
        yield handle
    finally:
        handle.detach()
