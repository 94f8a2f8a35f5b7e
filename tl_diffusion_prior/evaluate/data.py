"""The evaluation's text: the corpus's held-out split and the out-of-domain sets.

All come from :mod:`tl_diffusion_prior.data.corpus` (``load_corpus("heldout")`` and
``out_of_domain_sets()``: Python's ``pydoc_data.topics`` and a second set of another kind). No
method is trained on any of them. The held-out split is cut source by source by default, so each
source gets the same number of windows and its own figures. Texts are cut into windows either
like the trainer's packed rows (:func:`packed_windows`, the default) or as the first tokens of
each document (:func:`~tl_diffusion_prior.evaluate.fidelity.token_windows`, the paper's
protocol), as :func:`held_out_windows` does for an evaluation run. Documents may arrive as
strings, dicts with a ``"text"`` key or objects with a ``text`` attribute.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch

from tl_diffusion_prior.data import corpus
from tl_diffusion_prior.data.token_source import TextTokenSource
from tl_diffusion_prior.evaluate.fidelity import TokenSet, token_windows
from tl_diffusion_prior.evaluate.settings import EvalSettings


def document_text(doc: Any) -> str:
    """The text of one document in any of the accepted forms."""
    if isinstance(doc, str):
        return doc
    if isinstance(doc, dict) and isinstance(doc.get("text"), str):
        return doc["text"]
    text = getattr(doc, "text", None)
    if isinstance(text, str):
        return text
    raise TypeError(
        f"Cannot read text from a {type(doc).__name__}; expected a str, a dict with 'text' or an "
        "object with a .text attribute."
    )


def texts_of(docs: Iterable[Any]) -> list[str]:
    """Every document's text; ``docs`` may also be an object with a ``documents`` attribute."""
    if hasattr(docs, "documents"):
        docs = docs.documents
    return [document_text(doc) for doc in docs]


def heldout_documents() -> list[Any]:
    """The packaged corpus's held-out documents (each knows its ``source``)."""
    return list(corpus.load_corpus("heldout"))


def out_of_domain_sets() -> dict[str, list[Any]]:
    """Every out-of-domain set of the corpus module, by name (pydoc first)."""
    return {name: list(docs) for name, docs in corpus.out_of_domain_sets().items()}


def out_of_domain_texts() -> list[str]:
    """Documents from another domain than the training corpus (Python's pydoc topics)."""
    return texts_of(corpus.out_of_domain_texts())


def packed_windows(
    model,
    texts: Sequence[Any],
    name: str,
    seq_len: int = 128,
    max_windows: int = 128,
    seed: int = 0,
) -> TokenSet:
    """Rows of BOS + ``seq_len - 1`` tokens of the packed document stream, exactly as the
    trainer captures its training and validation activations (documents shuffled with ``seed``,
    EOS between documents), so held-out rows follow the training distribution of positions and
    contexts. Each row is its own bootstrap unit.
    """
    source = TextTokenSource(
        texts_of(texts),
        model.tokenizer,
        batch_size=max_windows,
        ctx=seq_len,
        shuffle_seed=seed,
        drop_remainder=False,
    )
    tokens = next(iter(source), None)
    if tokens is None or tokens.shape[0] == 0:
        raise ValueError(f"{name!r} holds too little text for one {seq_len}-token row.")
    return TokenSet(name, tokens.long().cpu(), torch.arange(tokens.shape[0]))


def _source_of(doc: Any) -> str | None:
    source = doc.get("source") if isinstance(doc, dict) else getattr(doc, "source", None)
    return source if isinstance(source, str) else None


def _by_source(docs: Sequence[Any]) -> dict[str, list[Any]] | None:
    """Documents grouped by their ``source`` in first-seen order; None if any has none."""
    groups: dict[str, list[Any]] = {}
    for doc in docs:
        source = _source_of(doc)
        if source is None:
            return None
        groups.setdefault(source, []).append(doc)
    return groups


def _windows(model, docs, name: str, seq_len: int, settings: EvalSettings) -> TokenSet:
    if settings.window_mode == "packed":
        return packed_windows(model, docs, name, seq_len, settings.max_sequences, settings.seed)
    return token_windows(
        model, texts_of(docs), name, seq_len, settings.max_sequences, settings.windows_per_doc
    )


def per_source_windows(
    model, docs: Sequence[Any], name: str, seq_len: int, settings: EvalSettings
) -> TokenSet:
    """``settings.max_sequences`` windows from each source's documents, pooled into one set
    whose ``groups`` name each window's source (so every source weighs the same in the pooled
    figure and gets its own). Documents without a source give one pooled set instead."""
    groups = _by_source(docs)
    if groups is None or len(groups) < 2:
        return _windows(model, docs, name, seq_len, settings)
    parts = [_windows(model, group, name, seq_len, settings) for group in groups.values()]
    offsets = torch.tensor([0] + [int(p.doc_ids.max()) + 1 for p in parts[:-1]]).cumsum(0)
    labels = tuple(src for src, p in zip(groups, parts, strict=True) for _ in range(len(p.doc_ids)))
    return TokenSet(
        name,
        torch.cat([p.tokens for p in parts]),
        torch.cat([p.doc_ids + off for p, off in zip(parts, offsets, strict=True)]),
        groups=labels,
    )


def held_out_windows(
    model,
    settings: EvalSettings,
    priors: Sequence[Any] = (),
    heldout: Sequence[Any] | None = None,
    ood: Sequence[Any] | Mapping[str, Sequence[Any]] | None = None,
) -> list[TokenSet]:
    """The in-domain (``"heldout"``) windows, then one set per out-of-domain text.

    Args:
        model: Its tokenizer cuts the texts.
        settings: ``window_mode``, ``max_sequences``, ``per_source``, ``windows_per_doc``,
            ``seed`` and the window length (``settings.resolved_seq_len(priors)``).
        priors: The priors evaluated (their capture context is the default window length).
        heldout: In-domain documents; default the corpus's held-out split. With
            ``settings.per_source`` and documents that name their ``source``, windows are cut
            per source (see :func:`per_source_windows`).
        ood: Out-of-domain documents: one set (named ``"pydoc"``) or a mapping name -> documents;
            default :func:`out_of_domain_sets`.
    """
    seq_len = settings.resolved_seq_len(priors)
    heldout = heldout if heldout is not None else heldout_documents()
    if ood is None:
        ood = out_of_domain_sets()
    elif not isinstance(ood, Mapping):
        ood = {"pydoc": ood}
    if settings.per_source:
        first = per_source_windows(model, heldout, "heldout", seq_len, settings)
    else:
        first = _windows(model, heldout, "heldout", seq_len, settings)
    return [first] + [_windows(model, docs, name, seq_len, settings) for name, docs in ood.items()]
