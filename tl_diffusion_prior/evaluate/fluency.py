"""Offline scores of generated continuations: fluency (NLL) and concept presence.

Both are read from ONE forward pass of the **unsteered** model over ``prompt + continuation``
(every steering attached to the model is suspended while scoring), so they judge the text, not the
intervention that produced it.

* :func:`continuation_nll`: per sample, the mean negative log-likelihood of the continuation
  tokens given everything before them (the paper's appendix "conditional NLL"). Lower is more
  fluent. Padding in the continuation (``continuation_mask``, e.g. from :func:`mask_after_eos`) is
  excluded; left padding in the prompt is masked with ``prompt_attention_mask``.
* :func:`concept_logprob`: per sample, the mean over continuation positions of
  ``log P(next token is a concept token | text so far)``, i.e. the log of the probability mass the
  model puts on a set of concept tokens (:func:`concept_token_ids`) after each continuation token.
  Text about weddings makes the model expect "wedding", "bride", ... next far more than text about
  taxes does; the position before the first continuation token is left out because it depends only
  on the prompt, identical for every method. Higher is more on-concept. No judge model and no
  training are needed, and it is comparable across steering methods and scales.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from tl_diffusion_prior.core.lens import LensModel
from tl_diffusion_prior.steering.positions import steering_suspended


@dataclass
class ContinuationScores:
    """Per-sample scores of continuations (see module docstring).

    Attributes:
        nll: Mean NLL of the counted continuation tokens (nats per token).
        concept_logprob: Mean log-probability of the concept set, or None without concept ids.
        num_tokens: How many continuation tokens each sample counted.
    """

    nll: Float[Tensor, " batch"]
    concept_logprob: Float[Tensor, " batch"] | None
    num_tokens: Int[Tensor, " batch"]


def mask_after_eos(
    continuation_tokens: Int[Tensor, "batch cont"], eos_token_id: int | Sequence[int]
) -> Bool[Tensor, "batch cont"]:
    """True up to and including each row's first EOS; False after it (generate's EOS padding)."""
    stop = torch.isin(
        continuation_tokens,
        torch.as_tensor(eos_token_id, device=continuation_tokens.device).reshape(-1),
    )
    stopped_before = (stop.long().cumsum(dim=1) - stop.long()) > 0
    return ~stopped_before


def concept_token_ids(model: LensModel, words: Sequence[str]) -> list[int]:
    """Token ids standing for ``words``: for each word, its single-token spellings among ``word``,
    ``" word"``, ``"Word"`` and ``" Word"``; a word with none contributes the first token of
    ``" word"`` (a weaker signal for long words: prefer words that are single tokens)."""
    if isinstance(words, str) or not words:
        raise ValueError(f"words must be a non-empty list of strings, got {words!r}.")
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
        raise ValueError("concept_token_ids needs a model with a tokenizer.")
    ids: list[int] = []
    for word in words:
        if not isinstance(word, str) or not word.strip():
            raise ValueError(f"every word must be a non-empty string, got {word!r}.")
        word = word.strip()
        variants = [word, " " + word, word.capitalize(), " " + word.capitalize()]
        encoded = [tokenizer.encode(v, add_special_tokens=False) for v in variants]
        single = [e[0] for e in encoded if len(e) == 1]
        ids.extend(single or encoded[1][:1])
    return sorted(set(ids))


def _check_inputs(
    prompt_tokens: Tensor,
    continuation_tokens: Tensor,
    prompt_attention_mask: Tensor | None,
    continuation_mask: Tensor | None,
) -> None:
    for name, tokens in (
        ("prompt_tokens", prompt_tokens),
        ("continuation_tokens", continuation_tokens),
    ):
        if not isinstance(tokens, Tensor) or tokens.is_floating_point() or tokens.ndim != 2:
            raise ValueError(f"{name} must be an integer [batch, pos] tensor, got {tokens!r}.")
    if prompt_tokens.shape[0] != continuation_tokens.shape[0]:
        raise ValueError(
            f"prompt_tokens has {prompt_tokens.shape[0]} rows but continuation_tokens has "
            f"{continuation_tokens.shape[0]}; pass one continuation per prompt."
        )
    if prompt_tokens.shape[1] < 1 or continuation_tokens.shape[1] < 1:
        raise ValueError("prompt_tokens and continuation_tokens need at least one position each.")
    for name, mask, like in (
        ("prompt_attention_mask", prompt_attention_mask, prompt_tokens),
        ("continuation_mask", continuation_mask, continuation_tokens),
    ):
        if mask is not None and mask.shape != like.shape:
            raise ValueError(
                f"{name} must have shape {tuple(like.shape)}, got {tuple(mask.shape)}."
            )


def score_continuations(
    model: LensModel,
    prompt_tokens: Int[Tensor, "batch prompt"],
    continuation_tokens: Int[Tensor, "batch cont"],
    *,
    concept_ids: Sequence[int] | None = None,
    prompt_attention_mask: Int[Tensor, "batch prompt"] | Bool[Tensor, "batch prompt"] | None = None,
    continuation_mask: Bool[Tensor, "batch cont"] | None = None,
) -> ContinuationScores:
    """NLL (and the concept log-probability) of continuations under the unsteered model.

    Args:
        model: The model; attached steerings are suspended while scoring.
        prompt_tokens: Prompts, left-padded if of different lengths.
        continuation_tokens: The generated tokens after each prompt.
        concept_ids: Token ids of the concept (:func:`concept_token_ids`); None skips the score.
        prompt_attention_mask: 1 for real prompt tokens, 0 for (left) padding; None = all real.
        continuation_mask: Which continuation tokens count (e.g. :func:`mask_after_eos`); None =
            all. A row with none counted gets NaN.
    """
    _check_inputs(prompt_tokens, continuation_tokens, prompt_attention_mask, continuation_mask)
    device = next(model.parameters()).device
    prompt_tokens = prompt_tokens.to(device)
    continuation_tokens = continuation_tokens.to(device)
    n_prompt = prompt_tokens.shape[1]
    n_cont = continuation_tokens.shape[1]
    tokens = torch.cat([prompt_tokens, continuation_tokens], dim=1)
    counted = (
        torch.ones_like(continuation_tokens, dtype=torch.bool)
        if continuation_mask is None
        else continuation_mask.to(device).bool()
    )
    forward_kwargs = {}
    if prompt_attention_mask is not None:
        forward_kwargs["attention_mask"] = torch.cat(
            [prompt_attention_mask.to(device).long(), torch.ones_like(continuation_tokens)], dim=1
        )
    with torch.inference_mode(), steering_suspended(model):
        logits = model(tokens, return_type="logits", **forward_kwargs)
        log_probs = torch.log_softmax(logits[:, n_prompt - 1 :].float(), dim=-1)
    # log_probs[:, t] is the distribution after prompt + continuation[:t].
    token_log_probs = log_probs[:, :n_cont].gather(-1, continuation_tokens.unsqueeze(-1))[..., 0]
    weights = counted.float()
    num_tokens = counted.sum(dim=1)
    nll = -(token_log_probs * weights).sum(dim=1) / num_tokens
    concept = None
    if concept_ids is not None:
        ids = torch.as_tensor(list(concept_ids), dtype=torch.long, device=device)
        if ids.numel() == 0 or ids.min() < 0 or ids.max() >= log_probs.shape[-1]:
            raise ValueError(
                f"concept_ids must be a non-empty list of token ids below d_vocab "
                f"{log_probs.shape[-1]}, got {list(concept_ids)}."
            )
        mass = torch.logsumexp(log_probs[:, 1:, ids], dim=-1)  # after each continuation token
        concept = (mass * weights).sum(dim=1) / num_tokens
    return ContinuationScores(nll=nll, concept_logprob=concept, num_tokens=num_tokens)


def continuation_nll(
    model: LensModel,
    prompt_tokens: Int[Tensor, "batch prompt"],
    continuation_tokens: Int[Tensor, "batch cont"],
    *,
    prompt_attention_mask: Int[Tensor, "batch prompt"] | Bool[Tensor, "batch prompt"] | None = None,
    continuation_mask: Bool[Tensor, "batch cont"] | None = None,
) -> Float[Tensor, " batch"]:
    """Per-sample mean NLL of the continuation under the unsteered model (lower = more fluent)."""
    return score_continuations(
        model,
        prompt_tokens,
        continuation_tokens,
        prompt_attention_mask=prompt_attention_mask,
        continuation_mask=continuation_mask,
    ).nll


def concept_logprob(
    model: LensModel,
    prompt_tokens: Int[Tensor, "batch prompt"],
    continuation_tokens: Int[Tensor, "batch cont"],
    concept_ids: Sequence[int],
    *,
    prompt_attention_mask: Int[Tensor, "batch prompt"] | Bool[Tensor, "batch prompt"] | None = None,
    continuation_mask: Bool[Tensor, "batch cont"] | None = None,
) -> Float[Tensor, " batch"]:
    """Per-sample mean log-probability of the concept tokens after each continuation token."""
    return score_continuations(
        model,
        prompt_tokens,
        continuation_tokens,
        concept_ids=concept_ids,
        prompt_attention_mask=prompt_attention_mask,
        continuation_mask=continuation_mask,
    ).concept_logprob
