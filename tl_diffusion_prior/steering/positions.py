"""Absolute positions, padding and prompt/generated bookkeeping for steering hooks.

A TransformerLens hook sees only ``[batch, pos, d_model]``: under the KV cache ``pos`` is 1 on every
generation step, and hooks are never given the attention mask. Steering libraries that index
positions relative to the current call therefore steer different tokens with and without the cache.
This module recovers, for every forward pass, what each row of the hooked tensor *is*:

* **Absolute position.** A forward pre-hook on the hooked block reads ``past_kv_cache_entry`` (its
  stored length is the offset of the new positions) and the ``attention_mask`` that
  TransformerLens passes to every block. (``generate`` and ``run_with_hooks`` call
  ``model.forward`` directly, so a pre-hook on the model itself would never fire there.)
* **Padding.** The block's ``attention_mask`` spans every position so far (cached ones included);
  positions it masks out are padding. When TransformerLens uses no mask (right-padded strings in a
  plain forward without a cache), the model attends to the pads as real tokens and so do we: right
  padding sits after the real tokens and cannot change them in a causal model.
* **Position 0.** Each row's first real position (the BOS, or whatever token plays the attention
  sink's role with ``prepend_bos=False``; after left padding, the first unmasked one).
* **Prompt length** ``P``: positions ``< P`` are prompt, ``>= P`` generated. Inside
  ``model.generate`` / ``generate_stream`` it is the length of the first forward pass (the
  tracker wraps both, as instance attributes, while attached), with or without the cache. Outside
  them, with a cache (a hand-written decoding loop), it is the length of the pass that found the
  cache empty; with a cache first seen non-empty, everything already in it counts as prompt.
  Without a cache every position is prompt.

One :class:`PositionTracker` per model is shared by every steering attached to it and reference
counted, so attachments can nest and be released in any order.
"""

from __future__ import annotations

import contextlib
import functools
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from jaxtyping import Bool
from torch import Tensor
from transformer_lens import HookedTransformer

POSITIONS: tuple[str, ...] = ("all", "prompt", "generated")

_TRACKERS: weakref.WeakKeyDictionary[HookedTransformer, PositionTracker] = (
    weakref.WeakKeyDictionary()
)


@dataclass
class CallPositions:
    """What the hooked block knows about the current forward pass.

    Attributes:
        batch: Rows of the hooked tensor.
        n_new: Positions in this pass (1 per generation step under the KV cache).
        offset: Absolute position of the first of them (the KV cache's length before this pass).
        prompt_length: Positions ``< prompt_length`` are prompt, the rest generated.
        attention_mask: ``[batch, offset + n_new]`` (1 = real) or None when the model uses none.
    """

    batch: int
    n_new: int
    offset: int
    prompt_length: int
    attention_mask: Tensor | None
    _masks: dict = field(default_factory=dict, repr=False)

    def steer_mask(self, positions: str, device: torch.device) -> Bool[Tensor, "batch pos"]:
        """Which rows of this pass are steered: real, not the row's first real position, and in
        ``positions``. Computed once per pass and mode."""
        key = (positions, device)
        if key not in self._masks:
            self._masks[key] = self._compute(positions, device)
        return self._masks[key]

    def _compute(self, positions: str, device: torch.device) -> Tensor:
        absolute = torch.arange(self.offset, self.offset + self.n_new, device=device)
        mask = self.attention_mask
        if mask is None:
            keep = (absolute >= 1).expand(self.batch, self.n_new)
        else:
            full = self._full_mask(mask.to(device))
            real = full[:, self.offset :]
            # argmax returns the first maximal index: the first real position of each row (rows with
            # none have no real position to steer anyway).
            first_real = full.to(torch.uint8).argmax(dim=1, keepdim=True)
            keep = real & (absolute[None, :] != first_real)
        if positions == "prompt":
            keep = keep & (absolute < self.prompt_length)[None, :]
        elif positions == "generated":
            keep = keep & (absolute >= self.prompt_length)[None, :]
        return keep

    def _full_mask(self, mask: Tensor) -> Tensor:
        """The mask as ``[batch, offset + n_new]`` booleans.

        TransformerLens always passes the full-length mask to blocks. A shorter one (a hand-built
        call) is aligned to the newest positions and the missing history counted as real.
        """
        mask = mask.bool()
        total = self.offset + self.n_new
        if mask.shape[1] >= total:
            return mask[:, mask.shape[1] - total :]
        history = torch.ones(
            self.batch, total - mask.shape[1], dtype=torch.bool, device=mask.device
        )
        return torch.cat([history, mask], dim=1)


@dataclass
class _Generation:
    prompt_length: int | None = None


class PositionTracker:
    """Per-model block pre-hooks (one per steered layer) and a ``generate`` wrapper.

    Use :meth:`acquire` / :meth:`release`; do not construct directly.
    """

    def __init__(self, model: HookedTransformer) -> None:
        self._model_ref = weakref.ref(model)
        self._layer_refs: dict[int, int] = {}
        self._pre_handles: dict[int, torch.utils.hooks.RemovableHandle] = {}
        self._calls: dict[int, CallPositions] = {}
        self._cache_prompts: dict[int, tuple[weakref.ref, int]] = {}
        self._generations: list[_Generation] = []
        self._suspended = 0
        # Instance attributes shadow the class's methods; the previous ones (if a user patched
        # them) are restored on release.
        self._patched: dict[str, tuple[object, object]] = {}
        self._patch(model, "generate", self._wrap_generate)
        if hasattr(model, "generate_stream"):
            self._patch(model, "generate_stream", self._wrap_generate_stream)

    def _patch(self, model: HookedTransformer, name: str, wrap) -> None:
        wrapper = wrap(getattr(model, name))
        self._patched[name] = (model.__dict__.get(name), wrapper)
        setattr(model, name, wrapper)

    # ------------------------------------------------------------------ reference counting
    @classmethod
    def acquire(cls, model: HookedTransformer, layer: int) -> PositionTracker:
        """The model's tracker, with a pre-hook on ``blocks[layer]`` (created on first use)."""
        tracker = _TRACKERS.get(model)
        if tracker is None:
            tracker = cls(model)
            _TRACKERS[model] = tracker
        if layer not in tracker._layer_refs:
            hook = functools.partial(tracker._block_pre_hook, layer)
            tracker._pre_handles[layer] = model.blocks[layer].register_forward_pre_hook(
                hook, with_kwargs=True
            )
            tracker._layer_refs[layer] = 0
        tracker._layer_refs[layer] += 1
        return tracker

    def release(self, layer: int) -> None:
        """Undo one :meth:`acquire`; the last release removes every hook and the wrapper."""
        if self._layer_refs.get(layer, 0) == 0:
            return
        self._layer_refs[layer] -= 1
        if self._layer_refs[layer] == 0:
            del self._layer_refs[layer]
            self._pre_handles.pop(layer).remove()
            self._calls.pop(layer, None)
            self._cache_prompts.pop(layer, None)
        if not self._layer_refs:
            self._uninstall()

    @property
    def is_active(self) -> bool:
        return bool(self._layer_refs)

    def _uninstall(self) -> None:
        model = self._model_ref()
        if model is None:
            return
        if _TRACKERS.get(model) is self:
            del _TRACKERS[model]
        # Only undo our own patches: if someone wrapped generate after us, theirs stays in place.
        for name, (previous, wrapper) in self._patched.items():
            if model.__dict__.get(name) is wrapper:
                if previous is None:
                    del model.__dict__[name]
                else:
                    model.__dict__[name] = previous

    # ------------------------------------------------------------------------- suspension
    @property
    def suspended(self) -> bool:
        return self._suspended > 0

    @contextlib.contextmanager
    def suspend(self) -> Iterator[None]:
        self._suspended += 1
        try:
            yield
        finally:
            self._suspended -= 1

    # -------------------------------------------------------------------------- hooks
    def _wrap_generate(self, generate):
        @functools.wraps(generate)
        def wrapper(*args, **kwargs):
            self._generations.append(_Generation())
            try:
                return generate(*args, **kwargs)
            finally:
                self._generations.pop()

        return wrapper

    def _wrap_generate_stream(self, generate_stream):
        # The generation state is active only while the stream's generator runs, not while it
        # is suspended at a yield (the caller may run other forward passes in between).
        @functools.wraps(generate_stream)
        def wrapper(*args, **kwargs):
            generation = _Generation()
            stream = generate_stream(*args, **kwargs)
            while True:
                self._generations.append(generation)
                try:
                    item = next(stream)
                except StopIteration:
                    return
                finally:
                    self._generations.pop()
                yield item

        return wrapper

    def _block_pre_hook(self, layer: int, module, args, kwargs) -> None:
        residual = args[0] if args else kwargs["resid_pre"]
        batch, n_new = residual.shape[0], residual.shape[1]
        entry = kwargs.get("past_kv_cache_entry")
        offset = int(entry.past_keys.shape[1]) if entry is not None else 0
        self._calls[layer] = CallPositions(
            batch=batch,
            n_new=n_new,
            offset=offset,
            prompt_length=self._prompt_length(layer, entry, offset, n_new),
            attention_mask=kwargs.get("attention_mask"),
        )

    def _prompt_length(self, layer: int, entry, offset: int, n_new: int) -> int:
        if self._generations:
            generation = self._generations[-1]
            if generation.prompt_length is None:
                generation.prompt_length = offset + n_new
            return generation.prompt_length
        if entry is None:
            return offset + n_new
        if offset == 0:
            self._cache_prompts[layer] = (weakref.ref(entry), n_new)
            return n_new
        recorded = self._cache_prompts.get(layer)
        if recorded is not None and recorded[0]() is entry:
            return recorded[1]
        self._cache_prompts[layer] = (weakref.ref(entry), offset)
        return offset

    def call_positions(self, layer: int, batch: int, n_new: int) -> CallPositions:
        """The current pass's :class:`CallPositions` for ``layer``, checked against the hook's
        tensor shape."""
        call = self._calls.get(layer)
        if call is None or call.batch != batch or call.n_new != n_new:
            raise RuntimeError(
                f"The steering hook in blocks.{layer} fired outside a forward pass of that block "
                f"(saw batch {batch}, pos {n_new}; the block last ran with "
                f"{None if call is None else (call.batch, call.n_new)}). Run the model through "
                "model(...), run_with_cache, run_with_hooks or generate."
            )
        return call


def tracker_for(model: HookedTransformer) -> PositionTracker | None:
    """The model's active tracker, if any steering is attached."""
    return _TRACKERS.get(model)


@contextlib.contextmanager
def steering_suspended(model: HookedTransformer) -> Iterator[None]:
    """Within this context every steering attached to ``model`` passes activations through
    unchanged (its hooks stay attached). Used to score text under the unsteered model."""
    tracker = _TRACKERS.get(model)
    if tracker is None:
        yield
        return
    with tracker.suspend():
        yield
