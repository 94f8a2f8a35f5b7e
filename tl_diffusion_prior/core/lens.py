"""TransformerLens compatibility: the one module that touches TransformerLens internals.

The package works on two kinds of model:

* ``HookedTransformer`` (TransformerLens 3.x; the primary target, removed in 4.0), and
* ``TransformerBridge`` (TransformerLens 3.9 and 4.x), which wraps a Hugging Face model and exposes
  TransformerLens hook points: canonical names such as ``blocks.15.hook_out`` plus the legacy
  names (``blocks.15.hook_resid_post``) as aliases.

Both have the public API the rest of the package uses (``hook_dict``, ``hooks()``,
``run_with_hooks``, ``run_with_cache``, ``to_tokens``, ``generate``, ``cfg.d_model``, ``blocks``,
``tokenizer``). What differs, and lives here, is:

* what a block is given on each forward pass (the cache of past positions, the attention mask),
  which the steering's position tracking reads (:func:`block_input`);
* how extra hook points are hung under an existing one (``<hook>.hook_steered``) and how a
  permanent first hook is added to and removed from a hook point;
* wrapping a model instance's ``generate`` (to know the prompt length inside it).

Nothing else in the package reads private TransformerLens attributes or patches a model instance.
"""

from __future__ import annotations

import importlib.metadata
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Bool
from torch import Tensor, nn
from transformer_lens.hook_points import HookPoint

try:  # TransformerLens 3.x; 4.0 removed it (the import raises ImportError with a pointer).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from transformer_lens import HookedTransformer, HookedTransformerConfig
except ImportError:
    HookedTransformer = HookedTransformerConfig = None  # type: ignore[assignment,misc]

try:
    from transformer_lens.model_bridge import TransformerBridge
except ImportError:  # TransformerLens before 3.9
    TransformerBridge = None  # type: ignore[assignment,misc]

ModelKind = Literal["hooked", "bridge"]
MODEL_KINDS: tuple[str, ...] = ("hooked", "bridge")

# Annotation for "a HookedTransformer or a TransformerBridge" (the classes may be missing).
LensModel = Any


def transformer_lens_version() -> str:
    """The installed TransformerLens version string."""
    return importlib.metadata.version("transformer-lens")


def has_hooked_transformer() -> bool:
    """True where ``HookedTransformer`` exists (TransformerLens 3.x)."""
    return HookedTransformer is not None


def model_kind(model: object) -> ModelKind:
    """``"hooked"`` for a HookedTransformer, ``"bridge"`` for a TransformerBridge.

    Raises:
        TypeError: for anything else, saying which kinds are supported.
    """
    if HookedTransformer is not None and isinstance(model, HookedTransformer):
        return "hooked"
    if TransformerBridge is not None and isinstance(model, TransformerBridge):
        return "bridge"
    available = [
        name
        for name, cls in (
            ("transformer_lens.HookedTransformer", HookedTransformer),
            ("transformer_lens.model_bridge.TransformerBridge", TransformerBridge),
        )
        if cls is not None
    ]
    raise TypeError(
        f"model must be a {' or a '.join(available)} (TransformerLens "
        f"{transformer_lens_version()}), got {type(model).__name__}. Load one with "
        "tl_diffusion_prior.load_model(...) or TransformerLens itself."
    )


def splits_forward_at_layers(model: object) -> bool:
    """Whether ``model(resid, start_at_layer=L, tokens=..., return_type="loss")`` resumes a
    forward pass from a block's input (a HookedTransformer's API; a bridge's ``start_at_layer``
    takes other arguments and cannot compute the loss from a residual)."""
    return HookedTransformer is not None and isinstance(model, HookedTransformer)


def check_model_kind(kind: str | None) -> ModelKind:
    """``kind`` checked; None means ``"hooked"`` where it exists, else ``"bridge"``."""
    if kind is None:
        return "hooked" if HookedTransformer is not None else "bridge"
    if kind not in MODEL_KINDS:
        raise ValueError(f"model kind must be one of {MODEL_KINDS}, got {kind!r}.")
    if kind == "hooked" and HookedTransformer is None:
        raise ValueError(
            f"TransformerLens {transformer_lens_version()} has no HookedTransformer (removed in "
            "4.0); use kind='bridge' (--model-kind bridge), or install 'transformer-lens<4'."
        )
    if kind == "bridge" and TransformerBridge is None:
        raise ValueError(
            f"TransformerLens {transformer_lens_version()} has no TransformerBridge; install "
            "'transformer-lens>=3.9'."
        )
    return kind  # type: ignore[return-value]


def is_hook_model(model: object) -> bool:
    """True for anything with TransformerLens hook points this package can drive: a
    ``HookedRootModule`` (HookedTransformer or a user's own) or a TransformerBridge."""
    from transformer_lens import HookedRootModule

    return isinstance(model, HookedRootModule) or (
        TransformerBridge is not None and isinstance(model, TransformerBridge)
    )


def canonical_hook_name(model: LensModel, hook_name: str) -> str:
    """The name a hook function sees in ``hook.name`` (a bridge's alias resolves to its
    canonical name, e.g. ``blocks.15.hook_resid_post`` -> ``blocks.15.hook_out``)."""
    point = model.hook_dict[hook_name]
    return point.name or hook_name


# --------------------------------------------------------------------------------------------------
# Parameters under HookedTransformer names

# The order of a HookedTransformer's first parameters (embeddings, then the first block's norms and
# query weights), which its weight fingerprint reads.
_HOOKED_FIRST_PARAMETERS = (
    "embed.W_E",
    "pos_embed.W_pos",
    "blocks.0.ln1.w",
    "blocks.0.ln1.b",
    "blocks.0.ln2.w",
    "blocks.0.ln2.b",
    "blocks.0.attn.W_Q",
)


def fingerprint_parameters(model: nn.Module, n_first: int) -> list[tuple[str, Tensor]]:
    """The first ``n_first`` named parameters and the last one, as a HookedTransformer names,
    shapes and orders them, so that one model's fingerprint is the same whichever kind holds it.

    A bridge's ``tl_named_parameters()`` gives its weights under HookedTransformer names and
    shapes (for SmolLM2, bit-identical to the HookedTransformer's); any other module is read
    through ``named_parameters()``.
    """
    if TransformerBridge is None or not isinstance(model, TransformerBridge):
        named = list(model.named_parameters())
        return named[:n_first] + (named[-1:] if len(named) > n_first else [])
    params = dict(model.tl_named_parameters())
    first = [(name, params[name]) for name in _HOOKED_FIRST_PARAMETERS if name in params]
    last = next(
        ((name, params[name]) for name in ("unembed.b_U", "unembed.W_U") if name in params), None
    )
    return first[:n_first] + ([last] if last is not None else [])


# --------------------------------------------------------------------------------------------------
# What a block sees on each forward pass


@dataclass
class BlockInput:
    """One forward pass of one block, as steering's position tracking needs it.

    Attributes:
        residual: the block's input ``[batch, n_new, d_model]``.
        cache: the KV-cache object the pass reads and extends (compared by identity across
            passes), or None without a cache.
        offset: how many positions the cache held before this pass (0 without a cache).
        attention_mask: ``[batch, <= offset + n_new]``, True for real tokens, aligned to the
            newest positions; None when every position is real.
    """

    residual: Tensor
    cache: object | None
    offset: int
    attention_mask: Bool[Tensor, "batch key_pos"] | None


def block_input(kind: ModelKind, layer: int, args: tuple, kwargs: dict) -> BlockInput:
    """Read a forward pre-hook's ``(args, kwargs)`` on ``blocks[layer]`` of a ``kind`` model."""
    if kind == "hooked":
        residual = args[0] if args else kwargs["resid_pre"]
        entry = kwargs.get("past_kv_cache_entry")
        offset = int(entry.past_keys.shape[1]) if entry is not None else 0
        mask = kwargs.get("attention_mask")
        return BlockInput(residual, entry, offset, None if mask is None else mask.bool())
    # A bridge block is the Hugging Face decoder layer's wrapper: it gets the layer's kwargs.
    residual = args[0] if args else kwargs["hidden_states"]
    cache = kwargs.get("past_key_values", kwargs.get("cache"))
    offset = int(cache.get_seq_length(layer)) if cache is not None else 0
    return BlockInput(residual, cache, offset, _key_mask(kwargs.get("attention_mask")))


def _key_mask(mask: Tensor | None) -> Tensor | None:
    """Which keys are real, from a Hugging Face ``[batch, 1, query, key]`` attention mask.

    The last query position attends to every real key at or before it (padding is masked for
    every query), so its row is the padding mask over all keys so far.
    """
    if mask is None:
        return None
    if mask.ndim == 2:
        return mask.bool()
    row = mask[:, 0, -1, :]
    return row if row.dtype == torch.bool else row == 0


def register_block_pre_hook(
    model: LensModel, layer: int, hook: Callable[[BlockInput], None], prepend: bool = False
) -> torch.utils.hooks.RemovableHandle:
    """Call ``hook(block_input)`` before every forward pass of ``model.blocks[layer]``."""
    kind = model_kind(model)  # once, not on every pass

    def pre_hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
        hook(block_input(kind, layer, args, kwargs))

    return model.blocks[layer].register_forward_pre_hook(
        pre_hook, with_kwargs=True, prepend=prepend
    )


# --------------------------------------------------------------------------------------------------
# Hook points added under a host hook point


def add_child_hook_points(
    model: LensModel, host_name: str, child_names: Sequence[str]
) -> dict[str, HookPoint]:
    """Hang new hook points under ``host_name``: ``<host_name>.<child>`` for each child, visible
    to ``hook_dict``, ``run_with_cache`` and ``run_with_hooks``. Undo with
    :func:`remove_child_hook_points`."""
    host = model.hook_dict[host_name]
    points = {}
    for child in child_names:
        point = HookPoint()
        host.add_module(child, point)
        points[child] = point
    _refresh_hook_points(model, host_name, points, add=True)
    return points


def remove_child_hook_points(
    model: LensModel, host_name: str, points: dict[str, HookPoint]
) -> None:
    """Undo :func:`add_child_hook_points` (only these points; idempotent)."""
    host = model.hook_dict.get(host_name)
    if host is None:
        return
    for child, point in points.items():
        if host._modules.get(child) is point:
            del host._modules[child]
    _refresh_hook_points(model, host_name, points, add=False)


def _refresh_hook_points(
    model: LensModel, host_name: str, points: dict[str, HookPoint], add: bool
) -> None:
    if model_kind(model) == "hooked":
        model.setup()  # rebuilds hook_dict / mod_dict from the module tree
        return
    # The bridge keeps a registry of hook points, filled once by a scan of its components; hook
    # points hung later must be entered by hand, under the name used and the canonical one.
    canonical = canonical_hook_name(model, host_name)
    for child, point in points.items():
        names = dict.fromkeys([f"{host_name}.{child}", f"{canonical}.{child}"])
        if add:
            point.name = f"{host_name}.{child}"
            for name in names:
                model._hook_registry[name] = point
        else:
            for name in names:
                if model._hook_registry.get(name) is point:
                    del model._hook_registry[name]


def add_first_permanent_hook(point: HookPoint, hook: Callable) -> object:
    """Add ``hook`` to ``point`` ahead of every other, surviving ``reset_hooks()``; returns the
    handle for :func:`remove_hook` and :func:`has_hook`."""
    point.add_hook(hook, dir="fwd", is_permanent=True, prepend=True)
    return point.fwd_hooks[0]


def add_last_permanent_hook(point: HookPoint, hook: Callable) -> object:
    """Add ``hook`` to ``point`` after every hook already there, surviving ``reset_hooks()``
    (hooks added later run after it); returns the handle for :func:`remove_hook`."""
    point.add_hook(hook, dir="fwd", is_permanent=True)
    return point.fwd_hooks[-1]


def remove_hook(point: HookPoint, handle: object) -> None:
    """Remove exactly the hook behind ``handle`` (added by :func:`add_first_permanent_hook`)."""
    handle.hook.remove()
    point.fwd_hooks = [h for h in point.fwd_hooks if h is not handle]


def has_hook(point: HookPoint, handle: object) -> bool:
    """Whether ``handle``'s hook is still registered (``reset_hooks(including_permanent=True)``
    removes permanent hooks too)."""
    return any(h is handle for h in point.fwd_hooks)


def has_child_hook_point(model: LensModel, hook_name: str, child: str) -> bool:
    return child in model.hook_dict[hook_name]._modules


# --------------------------------------------------------------------------------------------------
# Wrapping a model instance's methods


class MethodWrapper:
    """Shadow ``model.<name>`` by ``wrap(original)`` as an instance attribute; :meth:`restore`
    puts back what was there, unless someone wrapped it again after us."""

    def __init__(self, model: nn.Module, name: str, wrap: Callable[[Callable], Callable]):
        self._name = name
        self._previous = model.__dict__.get(name)
        self._wrapper = wrap(getattr(model, name))
        # The instance dict is where an attribute shadows the class's method; restore() reads it
        # back from there (and a bridge's __setattr__ runs extra hook-registry logic we don't need).
        model.__dict__[name] = self._wrapper

    def restore(self, model: nn.Module) -> None:
        if model.__dict__.get(self._name) is not self._wrapper:
            return
        if self._previous is None:
            del model.__dict__[self._name]
        else:
            model.__dict__[self._name] = self._previous


def generation_methods(model: LensModel) -> list[str]:
    """The model's methods that run a whole generation (each prompt pass, then decode steps)."""
    return [name for name in ("generate", "generate_stream") if hasattr(model, name)]
