"""Validation of full TransformerLens hook names, with suggestions, and ``stop_at_layer``."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence

from transformer_lens import HookedRootModule

_BLOCK_HOOK = re.compile(r"^blocks\.(\d+)\.")


def validate_hook_names(model: HookedRootModule, hook_names: str | Iterable[str]) -> list[str]:
    """Return ``hook_names`` as a list, raising a helpful error for any name the model lacks."""
    if not isinstance(model, HookedRootModule):
        raise TypeError(
            f"model must be a TransformerLens HookedRootModule (e.g. HookedTransformer), "
            f"got {type(model).__name__}."
        )
    names = [hook_names] if isinstance(hook_names, str) else list(hook_names)
    if not names:
        raise ValueError(
            "hook_names is empty; pass at least one, e.g. 'blocks.15.hook_resid_post'."
        )
    if len(set(names)) != len(names):
        raise ValueError(f"hook_names contains duplicates: {names}.")
    available = list(model.hook_dict)
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"hook names must be strings, got {name!r}.")
        if name not in model.hook_dict:
            close = difflib.get_close_matches(name, available, n=5, cutoff=0.6)
            examples = close or [n for n in available if n.endswith("hook_resid_post")][:5]
            raise ValueError(
                f"Unknown hook name {name!r} for {type(model).__name__} "
                f"({len(available)} hook points). "
                f"{'Did you mean' if close else 'Valid names look like'}: {examples}. "
                "Use full TransformerLens names; `list(model.hook_dict)` lists them all."
            )
    return names


def layer_of(hook_name: str) -> int | None:
    """The block index a hook name lives in, or None for hooks outside the blocks."""
    match = _BLOCK_HOOK.match(hook_name)
    return int(match.group(1)) if match else None


def stop_at_layer(hook_names: Sequence[str]) -> int | None:
    """The exclusive ``stop_at_layer`` that still runs every hook in ``hook_names``.

    None (run the whole model) when any hook lies outside ``blocks.*``.
    """
    layers = [layer_of(name) for name in hook_names]
    if any(layer is None for layer in layers):
        return None
    return max(layers) + 1
