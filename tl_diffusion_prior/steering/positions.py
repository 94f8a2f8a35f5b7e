"""Absolute positions, padding and prompt/generated bookkeeping for steering hooks.

A TransformerLens hook sees only ``[batch, pos, d_model]``: under the KV cache ``pos`` is 1 on every
generation step, and hooks are never given the attention mask. Steering libraries that index
positions relative to the current call therefore steer different tokens with and without the cache.
This module recovers, for every forward pass, what each row of the hooked tensor *is*:

* **Absolute position.** A forward pre-hook on the hooked block reads the KV cache it is given
  (its stored length is the offset of the new positions) and the attention mask
  (:func:`~tl_diffusion_prior.core.lens.block_input` reads both, for a HookedTransformer's
  ``past_kv_cache_entry`` and for a TransformerBridge's Hugging Face cache). (``generate`` and
  ``run_with_hooks`` call ``model.forward`` directly, so a pre-hook on the model itself would never
  fire there.)
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
* **Sequence keys** (only while a steering with a prior is attached, which needs them for its
  noise): a forward pre-hook on ``blocks[0]`` hashes each real position of the first block's input
  into a running key per row (:func:`~tl_diffusion_prior.steering.noise.prefix_keys`), carried
  from one cached pass to the next, and hands this pass's keys to the steered blocks. Under the KV
  cache the carry is tied to the cache (the same entry, grown by exactly the positions seen), like
  the prompt length. Keys are unknown, and count as 0, in a pass that skipped ``blocks[0]``
  (``start_at_layer``); a cache first seen non-empty carries 0 for the history before it.

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
from jaxtyping import Bool, Int
from torch import Tensor

from tl_diffusion_prior.core.lens import (
    BlockInput,
    LensModel,
    MethodWrapper,
    generation_methods,
    register_block_pre_hook,
)
from tl_diffusion_prior.steering.noise import prefix_keys

POSITIONS: tuple[str, ...] = ("all", "prompt", "generated")

_TRACKERS: weakref.WeakKeyDictionary[LensModel, PositionTracker] = weakref.WeakKeyDictionary()


def real_positions(
    attention_mask: Tensor | None, batch: int, offset: int, n_new: int, device: torch.device
) -> tuple[Bool[Tensor, "batch pos"], Int[Tensor, "batch pos"]]:
    """Which of a pass's positions are real tokens, and each one's position counted from its row's
    first real position (negative on left padding).

    ``attention_mask`` is ``[batch, <= offset + n_new]`` (1 = real) or None (every position real).
    TransformerLens always passes the full-length mask to blocks. A shorter one (a hand-built call)
    is aligned to the newest positions and the missing history counted as real.
    """
    absolute = torch.arange(offset, offset + n_new, device=device)
    if attention_mask is None:
        return (
            torch.ones(batch, n_new, dtype=torch.bool, device=device),
            absolute.expand(batch, n_new),
        )
    mask = attention_mask.to(device).bool()
    total = offset + n_new
    if mask.shape[1] >= total:
        full = mask[:, mask.shape[1] - total :]
    else:
        history = torch.ones(batch, total - mask.shape[1], dtype=torch.bool, device=device)
        full = torch.cat([history, mask], dim=1)
    # argmax returns the first maximal index: the first real position of each row (rows with none
    # have no real position to steer anyway).
    first_real = full.to(torch.uint8).argmax(dim=1, keepdim=True)
    return full[:, offset:], absolute[None, :] - first_real


@dataclass
class CallPositions:
    """What the hooked block knows about the current forward pass.

    Attributes:
        batch: Rows of the hooked tensor.
        n_new: Positions in this pass (1 per generation step under the KV cache).
        offset: Absolute position of the first of them (the KV cache's length before this pass).
        prompt_length: Positions ``< prompt_length`` are prompt, the rest generated.
        attention_mask: ``[batch, offset + n_new]`` (1 = real) or None when the model uses none.
        keys: ``[batch, n_new]`` sequence keys of this pass's positions (see
            :func:`~tl_diffusion_prior.steering.noise.prefix_keys`), or None when not tracked or
            unknown (they then count as 0).
    """

    batch: int
    n_new: int
    offset: int
    prompt_length: int
    attention_mask: Tensor | None
    keys: Tensor | None = None
    _memo: dict = field(default_factory=dict, repr=False)

    def steer_mask(self, positions: str, device: torch.device) -> Bool[Tensor, "batch pos"]:
        """Which rows of this pass are steered: real, not the row's first real position, and in
        ``positions``. Computed once per pass and mode."""
        key = (positions, device)
        if key not in self._memo:
            self._memo[key] = self._compute(positions, device)
        return self._memo[key]

    def real_positions(self, device: torch.device) -> Int[Tensor, "batch pos"]:
        """Each position counted from its row's first real position. Computed once per pass."""
        return self._real(device)[1]

    def sequence_keys(self, device: torch.device) -> Int[Tensor, "batch pos"]:
        """This pass's sequence keys on ``device`` (zeros when unknown). Computed once per pass."""
        key = ("keys", device)
        if key not in self._memo:
            self._memo[key] = (
                torch.zeros(self.batch, self.n_new, dtype=torch.int64, device=device)
                if self.keys is None
                else self.keys.to(device)
            )
        return self._memo[key]

    def _real(self, device: torch.device) -> tuple[Tensor, Tensor]:
        key = ("real", device)
        if key not in self._memo:
            self._memo[key] = real_positions(
                self.attention_mask, self.batch, self.offset, self.n_new, device
            )
        return self._memo[key]

    def _compute(self, positions: str, device: torch.device) -> Tensor:
        real, position = self._real(device)
        keep = real & (position != 0)
        absolute = torch.arange(self.offset, self.offset + self.n_new, device=device)
        if positions == "prompt":
            keep = keep & (absolute < self.prompt_length)[None, :]
        elif positions == "generated":
            keep = keep & (absolute >= self.prompt_length)[None, :]
        return keep


@dataclass
class _Generation:
    prompt_length: int | None = None


@dataclass
class _PassKeys:
    """The sequence keys ``blocks[0]`` computed in the latest forward pass, and the steered layers
    that took them (a layer that runs again without ``blocks[0]`` in between gets none)."""

    keys: Tensor
    taken_by: set[int] = field(default_factory=set)


class PositionTracker:
    """Per-model block pre-hooks (one per steered layer) and a ``generate`` wrapper.

    Use :meth:`acquire` / :meth:`release`; do not construct directly.
    """

    def __init__(self, model: LensModel) -> None:
        self._model_ref = weakref.ref(model)
        self._layer_refs: dict[int, int] = {}
        self._pre_handles: dict[int, torch.utils.hooks.RemovableHandle] = {}
        self._calls: dict[int, CallPositions] = {}
        self._cache_prompts: dict[int, tuple[weakref.ref, int]] = {}
        self._generations: list[_Generation] = []
        self._suspended = 0
        self._keyed = 0
        self._key_handle: torch.utils.hooks.RemovableHandle | None = None
        self._pass_keys: _PassKeys | None = None
        self._key_carry: tuple[weakref.ref, int, Tensor] | None = None
        # Instance attributes shadow the class's methods; the previous ones (if a user patched
        # them) are restored on release.
        wraps = {"generate": self._wrap_generate, "generate_stream": self._wrap_generate_stream}
        self._wrappers = [
            MethodWrapper(model, name, wraps[name]) for name in generation_methods(model)
        ]

    # ------------------------------------------------------------------ reference counting
    @classmethod
    def acquire(cls, model: LensModel, layer: int, keyed: bool = False) -> PositionTracker:
        """The model's tracker, with a pre-hook on ``blocks[layer]`` (created on first use).

        ``keyed`` also tracks sequence keys (a pre-hook on ``blocks[0]``) until the matching
        ``release(layer, keyed=True)``.
        """
        tracker = _TRACKERS.get(model)
        if tracker is None:
            tracker = cls(model)
            _TRACKERS[model] = tracker
        if layer not in tracker._layer_refs:
            hook = functools.partial(tracker._block_pre_hook, layer)
            tracker._pre_handles[layer] = register_block_pre_hook(model, layer, hook)
            tracker._layer_refs[layer] = 0
        tracker._layer_refs[layer] += 1
        if keyed:
            if tracker._key_handle is None:
                # Prepended, so the keys are ready before a steered blocks[0]'s own pre-hook.
                tracker._key_handle = register_block_pre_hook(
                    model, 0, tracker._key_pre_hook, prepend=True
                )
            tracker._keyed += 1
        return tracker

    def release(self, layer: int, keyed: bool = False) -> None:
        """Undo one :meth:`acquire`; the last release removes every hook and the wrapper."""
        if self._layer_refs.get(layer, 0) == 0:
            return
        if keyed and self._keyed > 0:
            self._keyed -= 1
            if self._keyed == 0:
                self._remove_key_hook()
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

    def _remove_key_hook(self) -> None:
        if self._key_handle is not None:
            self._key_handle.remove()
            self._key_handle = None
        self._pass_keys = None
        self._key_carry = None

    def _uninstall(self) -> None:
        self._remove_key_hook()
        model = self._model_ref()
        if model is None:
            return
        if _TRACKERS.get(model) is self:
            del _TRACKERS[model]
        # Only undo our own patches: if someone wrapped generate after us, theirs stays in place.
        for wrapper in self._wrappers:
            wrapper.restore(model)

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

    def _block_pre_hook(self, layer: int, block: BlockInput) -> None:
        batch, n_new = block.residual.shape[0], block.residual.shape[1]
        self._calls[layer] = CallPositions(
            batch=batch,
            n_new=n_new,
            offset=block.offset,
            prompt_length=self._prompt_length(layer, block.cache, block.offset, n_new),
            attention_mask=block.attention_mask,
            keys=self._take_keys(layer, batch, n_new),
        )

    def _key_pre_hook(self, block: BlockInput) -> None:
        residual, entry, offset = block.residual, block.cache, block.offset
        batch, n_new = residual.shape[0], residual.shape[1]
        real, position = real_positions(block.attention_mask, batch, offset, n_new, residual.device)
        keys = prefix_keys(residual, real, position, self._carry(entry, offset, batch))
        if entry is not None:
            self._key_carry = (weakref.ref(entry), offset + n_new, keys[:, -1])
        self._pass_keys = _PassKeys(keys)

    def _carry(self, entry, offset: int, batch: int) -> Tensor | None:
        """The keys at the end of the cached history, if this tracker saw all of it."""
        if entry is None or offset == 0 or self._key_carry is None:
            return None
        entry_ref, length, carry = self._key_carry
        if entry_ref() is entry and length == offset and carry.shape[0] == batch:
            return carry
        return None

    def _take_keys(self, layer: int, batch: int, n_new: int) -> Tensor | None:
        pass_keys = self._pass_keys
        if (
            pass_keys is None
            or layer in pass_keys.taken_by
            or tuple(pass_keys.keys.shape) != (batch, n_new)
        ):
            return None
        pass_keys.taken_by.add(layer)
        return pass_keys.keys

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


def tracker_for(model: LensModel) -> PositionTracker | None:
    """The model's active tracker, if any steering is attached."""
    return _TRACKERS.get(model)


@contextlib.contextmanager
def steering_suspended(model: LensModel) -> Iterator[None]:
    """Within this context every steering attached to ``model`` passes activations through
    unchanged (its hooks stay attached). Used to score text under the unsteered model."""
    tracker = _TRACKERS.get(model)
    if tracker is None:
        yield
        return
    with tracker.suspend():
        yield
