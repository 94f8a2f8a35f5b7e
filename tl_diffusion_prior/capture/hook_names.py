"""Validation of full TransformerLens hook names, with suggestions, and ``stop_at_layer``.

Capture and steering work on one ``d_model``-wide vector per token (``[batch, pos, d_model]``).
:func:`check_residual_hooks` refuses, by name and before any forward pass, the TransformerLens
hook points that carry something else (attention patterns, per-head vectors, MLP hidden units,
logits); hook points it does not know are left to the shape checks at capture time.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence

from tl_diffusion_prior.core.lens import LensModel, is_hook_model

_BLOCK_HOOK = re.compile(r"^blocks\.(\d+)\.")

# The last part of a TransformerLens hook name -> what its activation holds, when that is not one
# d_model vector per token (shapes as in TransformerLens' components).
_NOT_PER_TOKEN_D_MODEL = {
    "hook_pattern": "attention probabilities [batch, n_heads, query_pos, key_pos]",
    "hook_attn_scores": "attention scores [batch, n_heads, query_pos, key_pos]",
    "hook_q": "per-head queries [batch, pos, n_heads, d_head]",
    "hook_k": "per-head keys [batch, pos, n_heads, d_head]",
    "hook_v": "per-head values [batch, pos, n_heads, d_head]",
    "hook_rot_q": "per-head rotated queries [batch, pos, n_heads, d_head]",
    "hook_rot_k": "per-head rotated keys [batch, pos, n_heads, d_head]",
    "hook_z": "per-head attention outputs [batch, pos, n_heads, d_head]",
    "hook_result": "per-head outputs [batch, pos, n_heads, d_model]",
    "hook_attn_in": "per-head attention inputs [batch, pos, n_heads, d_model]",
    "hook_q_input": "per-head query inputs [batch, pos, n_heads, d_model]",
    "hook_k_input": "per-head key inputs [batch, pos, n_heads, d_model]",
    "hook_v_input": "per-head value inputs [batch, pos, n_heads, d_model]",
    "hook_scale": "normalisation scales [batch, pos, 1]",
    "hook_tokens": "token ids [batch, pos]",
    "hook_expert_weights": "mixture-of-experts routing weights [batch pos, n_experts]",
    "hook_expert_indices": "mixture-of-experts expert choices [batch pos, experts_per_token]",
}
# MLP hidden units: [batch, pos, d_mlp], fine only where d_mlp happens to equal d_model.
_MLP_HIDDEN = ("hook_pre", "hook_pre_linear", "hook_post")


def validate_hook_names(model: LensModel, hook_names: str | Iterable[str]) -> list[str]:
    """Return ``hook_names`` as a list, raising a helpful error for any name the model lacks."""
    if not is_hook_model(model):
        raise TypeError(
            "model must have TransformerLens hook points (a HookedTransformer, a TransformerBridge "
            f"or another HookedRootModule), got {type(model).__name__}."
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


def _not_per_token_d_model(model: LensModel, name: str) -> str | None:
    """What the activation at ``name`` holds if it is known not to be ``[batch, pos, d_model]``."""
    cfg = getattr(model, "cfg", None)
    parent, _, last = name.rpartition(".")
    if last in _NOT_PER_TOKEN_D_MODEL:
        return _NOT_PER_TOKEN_D_MODEL[last]
    if name == "unembed.hook_out":
        return "logits [batch, pos, d_vocab]"
    if last == "hook_normalized" and ".attn." in f".{parent}.":
        return "per-head normalised queries or keys [batch, pos, n_heads, d_head]"
    if last == "hook_normalized" and parent.endswith(".ln1"):
        if getattr(cfg, "use_split_qkv_input", False) or getattr(cfg, "use_attn_in", False):
            return "per-head normalised attention inputs [batch, pos, n_heads, d_model]"
    if last in _MLP_HIDDEN and ".mlp" in f".{parent}":
        d_mlp, d_model = getattr(cfg, "d_mlp", None), getattr(cfg, "d_model", None)
        if d_mlp is None or d_mlp != d_model:
            return f"MLP hidden units [batch, pos, d_mlp={d_mlp}]"
    return None


def check_residual_hooks(model: LensModel, hook_names: str | Iterable[str]) -> list[str]:
    """:func:`validate_hook_names`, then refuse hooks whose activation is not one ``d_model``
    vector per token (an attention pattern, per-head vectors, MLP hidden units, logits).

    Capture and steering need ``[batch, pos, d_model]`` activations; the error names the hook, what
    it carries and the residual-stream hook of the same block to use instead.
    """
    names = validate_hook_names(model, hook_names)
    for name in names:
        holds = _not_per_token_d_model(model, name)
        if holds is None:
            continue
        layer = layer_of(name)
        instead = f"blocks.{layer if layer is not None else 0}.hook_resid_post"
        raise ValueError(
            f"Hook {name!r} carries {holds}, not one d_model-wide vector per token "
            "([batch, pos, d_model]), which capture and steering need. Use a residual-stream hook "
            f"such as {instead!r} (or hook_resid_pre, hook_resid_mid, hook_attn_out, "
            "hook_mlp_out of a block)."
        )
    return names
