"""Difference-of-means steering vectors and activation norms at a hook.

Which positions are read: every position of each prompt **except position 0** (the BOS, or the first
token with ``prepend_bos=False``: in SmolLM2 it carries an activation ~100x the median norm whatever
the token, and would dominate any mean) and except padding. With ``reduce="mean"`` (default) the
activations are averaged within each prompt, then over prompts, so long prompts do not outweigh
short ones; this matches where :func:`~tl_diffusion_prior.steering.steer.steer` adds the vector by
default (every position but the first) and what the priors are trained on. ``reduce="last"`` reads
only each prompt's last token instead (contrastive-pair style, e.g. prompts ending in an answer
letter).

Massive activations also occur after position 0 (up to ~150x the median norm at position 1 in a
few percent of SmolLM2 sequences). By default positions whose norm exceeds ``outlier_multiple``
times the median norm of all read positions are dropped before averaging.

Activations are always read from the unsteered model (attached steerings are suspended).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from tl_diffusion_prior.capture.hook_names import check_residual_hooks, layer_of, stop_at_layer
from tl_diffusion_prior.core.lens import LensModel
from tl_diffusion_prior.core.validation import check_positive_int
from tl_diffusion_prior.steering.positions import steering_suspended

Prompts = str | Sequence[str] | Tensor | Sequence[Tensor]


def prompt_tokens(
    model: LensModel,
    prompts: Prompts,
    name: str = "prompts",
    prepend_bos: bool | None = None,
) -> list[Tensor]:
    """``prompts`` as a list of 1-D token tensors, one per prompt (no padding).

    Accepts a string, a list of strings (tokenised one at a time with ``model.to_tokens``), a
    1-D or ``[batch, pos]`` integer tensor (every row a full prompt, no padding) or a list of 1-D
    integer tensors of any lengths.
    """
    if isinstance(prompts, str):
        prompts = [prompts]
    if isinstance(prompts, Tensor):
        if prompts.is_floating_point() or prompts.ndim not in (1, 2):
            raise ValueError(
                f"{name} as a tensor must be integer tokens of shape [pos] or [batch, pos], got "
                f"{prompts.dtype} {tuple(prompts.shape)}."
            )
        prompts = [prompts] if prompts.ndim == 1 else list(prompts)
    if not isinstance(prompts, Sequence) or len(prompts) == 0:
        raise ValueError(
            f"{name} must be a non-empty string, list of strings, or token tensor(s); got "
            f"{prompts!r}."
        )
    out = []
    for index, prompt in enumerate(prompts):
        if isinstance(prompt, str):
            if getattr(model, "tokenizer", None) is None:
                raise ValueError(
                    f"{name}[{index}] is a string but the model has no tokenizer; pass token "
                    "tensors instead."
                )
            tokens = model.to_tokens(prompt, prepend_bos=prepend_bos)[0]
        elif isinstance(prompt, Tensor) and not prompt.is_floating_point() and prompt.ndim == 1:
            tokens = prompt
        else:
            raise TypeError(
                f"{name}[{index}] must be a string or a 1-D integer token tensor, got "
                f"{type(prompt).__name__}."
            )
        if tokens.shape[0] < 2:
            raise ValueError(
                f"{name}[{index}] has {tokens.shape[0]} token(s); position 0 is never read, so "
                "each prompt needs at least 2 tokens."
            )
        out.append(tokens.long())
    return out


def _read_positions(
    model: LensModel,
    hook_name: str,
    prompts: list[Tensor],
    reduce: str,
    batch_size: int,
) -> list[Float[Tensor, "n d_model"]]:
    """Per prompt, the float32 activations at the positions read (see module docstring)."""
    check_residual_hooks(model, hook_name)
    check_positive_int("batch_size", batch_size)
    device = next(model.parameters()).device
    captured: dict[str, Tensor] = {}

    def save(activation: Tensor, hook) -> None:
        captured["act"] = activation

    forward_kwargs = {}
    stop = stop_at_layer([hook_name])
    if stop is not None:
        forward_kwargs["stop_at_layer"] = stop
    out: list[Tensor] = []
    with torch.inference_mode(), steering_suspended(model), model.hooks([(hook_name, save)]):
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start : start + batch_size]
            lengths = [len(tokens) for tokens in chunk]
            width = max(lengths)
            # Right padding cannot change the real positions of a causal model; the mask keeps the
            # pads out of attention all the same.
            tokens = torch.zeros(len(chunk), width, dtype=torch.long, device=device)
            attention_mask = torch.zeros(len(chunk), width, dtype=torch.long, device=device)
            for row, (prompt, length) in enumerate(zip(chunk, lengths, strict=True)):
                tokens[row, :length] = prompt.to(device)
                attention_mask[row, :length] = 1
            model(tokens, attention_mask=attention_mask, **forward_kwargs)
            activation = captured.pop("act")
            if activation.ndim != 3:
                raise ValueError(
                    f"{hook_name!r} gives {activation.ndim}-D activations; steering vectors need "
                    "a [batch, pos, d_model] hook such as 'blocks.L.hook_resid_post'."
                )
            for row, length in enumerate(lengths):
                if reduce == "last":
                    out.append(activation[row, length - 1 : length].float())
                else:
                    out.append(activation[row, 1:length].float())
    return out


def _drop_outliers(
    per_prompt: list[Tensor], outlier_multiple: float | None
) -> list[Float[Tensor, "n d_model"]]:
    if outlier_multiple is None:
        return per_prompt
    median = torch.cat([acts.norm(dim=-1) for acts in per_prompt]).median()
    return [acts[acts.norm(dim=-1) <= outlier_multiple * median] for acts in per_prompt]


def _check_outlier_multiple(outlier_multiple: float | None) -> None:
    if outlier_multiple is not None and not outlier_multiple > 1:
        raise ValueError(f"outlier_multiple must be > 1 or None, got {outlier_multiple}.")


def _set_mean(per_prompt: list[Tensor], name: str) -> Tensor:
    """Mean over prompts of the mean over each prompt's kept positions (float64)."""
    per_prompt = [acts for acts in per_prompt if acts.shape[0] > 0]
    if not per_prompt:
        raise ValueError(f"Every position of {name} was dropped as an outlier; pass more prompts.")
    return torch.stack([acts.double().mean(dim=0) for acts in per_prompt]).mean(dim=0)


def steering_vector(
    model: LensModel,
    hook_name: str,
    positive: Prompts,
    negative: Prompts,
    *,
    reduce: str = "mean",
    prepend_bos: bool | None = None,
    outlier_multiple: float | None = 5.0,
    batch_size: int = 16,
) -> Float[Tensor, " d_model"]:
    """Mean activation at ``hook_name`` over ``positive`` minus that over ``negative``.

    Args:
        model: The model to read.
        hook_name: Full TransformerLens hook name, e.g. ``"blocks.15.hook_resid_post"``.
        positive, negative: Prompts (see :func:`prompt_tokens` for the accepted forms).
        reduce: ``"mean"`` over every position but the first (per prompt, then over prompts) or
            ``"last"`` token only.
        prepend_bos: Passed to ``model.to_tokens`` for string prompts (None = model default).
        outlier_multiple: Drop positions with a norm above this multiple of the median norm of all
            read positions (both sets); None keeps everything.
        batch_size: Prompts per forward pass.

    Returns:
        A ``[d_model]`` vector in the model's dtype and on its device, ready for ``steer``.
    """
    pos_tokens = prompt_tokens(model, positive, "positive", prepend_bos)
    neg_tokens = prompt_tokens(model, negative, "negative", prepend_bos)
    if reduce not in ("mean", "last"):
        raise ValueError(f"reduce must be 'mean' or 'last', got {reduce!r}.")
    _check_outlier_multiple(outlier_multiple)
    acts = _read_positions(model, hook_name, pos_tokens + neg_tokens, reduce, batch_size)
    acts = _drop_outliers(acts, outlier_multiple)
    n_positive = len(pos_tokens)
    difference = _set_mean(acts[:n_positive], "positive") - _set_mean(acts[n_positive:], "negative")
    parameter = _hooked_parameter(model, hook_name)
    return difference.to(device=parameter.device, dtype=parameter.dtype)


def mean_activation_norm(
    model: LensModel,
    hook_name: str,
    prompts: Prompts,
    *,
    prepend_bos: bool | None = None,
    outlier_multiple: float | None = 5.0,
    batch_size: int = 16,
) -> float:
    """Mean L2 norm of the activations at ``hook_name`` over every position but the first.

    All read positions are pooled (not averaged per prompt); outliers are dropped as in
    :func:`steering_vector`. Use it as ``reference_norm`` for relative steering scales.
    """
    tokens = prompt_tokens(model, prompts, "prompts", prepend_bos)
    _check_outlier_multiple(outlier_multiple)
    acts = _read_positions(model, hook_name, tokens, "mean", batch_size)
    norms = torch.cat([a.norm(dim=-1) for a in _drop_outliers(acts, outlier_multiple)])
    return float(norms.double().mean())


def _hooked_parameter(model: LensModel, hook_name: str) -> Tensor:
    """A parameter of the block holding ``hook_name`` (its dtype and device are the hook's)."""
    layer = layer_of(hook_name)
    module = model.blocks[layer] if layer is not None else model
    return next(module.parameters())
