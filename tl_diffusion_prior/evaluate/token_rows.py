"""Per-token activations of whole documents, with each token's document and character span.

The out-of-distribution benchmark and the probing tasks both need token-level rows that remember
where they came from: the document (the bootstrap's and the probe's split unit), the position, and
the characters the token covers (so labels such as "inside a quotation" can be read off the text).
:func:`tokenize_documents` cuts each text to its first tokens with the tokenizer's offset mapping;
:func:`capture_token_rows` runs them through the model up to the hook and keeps every token but
the BOS (the attention sink the priors never saw).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from tl_diffusion_prior.capture.hook_names import layer_of
from tl_diffusion_prior.core.lens import LensModel
from tl_diffusion_prior.core.validation import check_int


@dataclass
class DocumentTokens:
    """Documents cut to their first tokens.

    Attributes:
        texts: Each document's text (whole; ``spans`` index into it).
        token_ids: Per document, its token ids without the BOS.
        spans: Per document, the ``(start, end)`` characters of each token in ``texts``.
        sources: Per document, the corpus source it comes from (None when unknown).
    """

    texts: list[str]
    token_ids: list[list[int]]
    spans: list[list[tuple[int, int]]]
    sources: list[str | None]

    def __len__(self) -> int:
        return len(self.texts)


@dataclass
class TokenRows:
    """Activations of the tokens of :class:`DocumentTokens` (BOS excluded), in document order.

    Attributes:
        activations: ``[n, d_model]`` float32 activations at the hook, on the CPU.
        doc_ids: The index of each row's document in the :class:`DocumentTokens`.
        positions: Each row's position in its document's sequence (1 is the first after BOS).
        token_ids: Each row's token id.
    """

    activations: Float[Tensor, "n d_model"]
    doc_ids: Int[Tensor, " n"]
    positions: Int[Tensor, " n"]
    token_ids: Int[Tensor, " n"]

    def __len__(self) -> int:
        return self.doc_ids.numel()


def tokenize_documents(
    tokenizer,
    texts: Sequence[str],
    max_tokens: int,
    min_tokens: int = 8,
    sources: Sequence[str | None] | None = None,
) -> DocumentTokens:
    """The first ``max_tokens`` tokens of each text, with their character spans.

    Args:
        tokenizer: A Hugging Face fast tokenizer (it must return ``offset_mapping``).
        texts: The documents' texts.
        max_tokens: Tokens kept per document (the BOS comes on top).
        min_tokens: Documents with fewer tokens are dropped (too short to say much).
        sources: Optionally the source of each text, kept alongside.
    """
    check_int("max_tokens", max_tokens, 1)
    check_int("min_tokens", min_tokens, 1)
    if sources is not None and len(sources) != len(texts):
        raise ValueError(
            f"sources must have one entry per text ({len(texts)}), got {len(sources)}."
        )
    out = DocumentTokens([], [], [], [])
    for index, text in enumerate(texts):
        encoded = tokenizer(
            text, add_special_tokens=False, return_offsets_mapping=True, verbose=False
        )
        ids = list(encoded["input_ids"][:max_tokens])
        if len(ids) < min_tokens:
            continue
        out.texts.append(text)
        out.token_ids.append(ids)
        out.spans.append([tuple(span) for span in encoded["offset_mapping"][: len(ids)]])
        out.sources.append(None if sources is None else sources[index])
    if not out.texts:
        raise ValueError(f"No text has at least min_tokens={min_tokens} tokens.")
    return out


@torch.inference_mode()
def capture_token_rows(
    model: LensModel,
    hook_name: str,
    documents: DocumentTokens,
    batch_size: int = 8,
) -> TokenRows:
    """Run every document (BOS prepended) through ``model`` up to ``hook_name``'s block and keep
    the activation of every token but the BOS.

    Documents of equal length share a batch (no padding: a padded row's activations would depend
    on the padding), so the order of the forward passes differs from the documents' order, but
    the rows come back in document order.
    """
    check_int("batch_size", batch_size, 1)
    layer = layer_of(hook_name)
    bos = getattr(model.tokenizer, "bos_token_id", None)
    if bos is None:
        raise ValueError("The model's tokenizer has no BOS token; the rows need one in front.")
    stop = None if layer is None else layer + 1  # nothing after the hook's block is needed
    device = next(model.parameters()).device
    by_length: dict[int, list[int]] = {}
    for index, ids in enumerate(documents.token_ids):
        by_length.setdefault(len(ids), []).append(index)
    captured: dict[int, Tensor] = {}
    for indices in by_length.values():
        for start in range(0, len(indices), batch_size):
            chunk = indices[start : start + batch_size]
            tokens = torch.tensor([[bos, *documents.token_ids[i]] for i in chunk], device=device)
            _, cache = model.run_with_cache(tokens, names_filter=[hook_name], stop_at_layer=stop)
            acts = cache[hook_name][:, 1:].float().cpu()
            for row, index in enumerate(chunk):
                captured[index] = acts[row]
    acts, doc_ids, positions, token_ids = [], [], [], []
    for index, ids in enumerate(documents.token_ids):
        acts.append(captured[index])
        doc_ids.append(torch.full((len(ids),), index, dtype=torch.long))
        positions.append(torch.arange(1, len(ids) + 1))
        token_ids.append(torch.tensor(ids, dtype=torch.long))
    return TokenRows(
        torch.cat(acts), torch.cat(doc_ids), torch.cat(positions), torch.cat(token_ids)
    )
