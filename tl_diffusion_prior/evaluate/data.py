"""The evaluation's text: the corpus's held-out split and an out-of-domain set.

Both come from :mod:`tl_diffusion_prior.data.corpus` (``load_corpus("heldout")`` and
``out_of_domain_texts()``, the latter being ``pydoc_data.topics``, which ships with CPython). No
method is trained on either. They are cut into windows either like the trainer's packed rows
(:func:`packed_windows`, the default) or as the first tokens of each document
(:func:`~tl_diffusion_prior.evaluate.fidelity.token_windows`, the paper's protocol). Documents
may arrive as strings, dicts with a ``"text"`` key or objects with a ``text`` attribute.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch

from tl_diffusion_prior.evaluate.fidelity import TokenSet


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


def heldout_texts() -> list[str]:
    """The packaged corpus's held-out documents."""
    from tl_diffusion_prior.data.corpus import load_corpus

    return texts_of(load_corpus("heldout"))


def out_of_domain_texts() -> list[str]:
    """Documents from another domain than the training corpus (Python's pydoc topics)."""
    try:
        from tl_diffusion_prior.data.corpus import out_of_domain_texts as corpus_ood
    except ImportError:
        corpus_ood = None
    if corpus_ood is not None:
        return texts_of(corpus_ood())
    # pydoc_data ships with every CPython, so the set exists even without the corpus module.
    from pydoc_data.topics import topics

    return [topics[key] for key in sorted(topics)]


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
    from tl_diffusion_prior.data.token_source import TextTokenSource

    source = TextTokenSource(
        list(texts),
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
