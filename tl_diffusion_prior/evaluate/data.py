"""The evaluation's text: the corpus's held-out split and an out-of-domain set.

Both come from :mod:`tl_diffusion_prior.data.corpus` (``load_corpus("heldout")`` and
``out_of_domain_texts()``, the latter being ``pydoc_data.topics``, which ships with CPython). No
method is trained on either. They are cut into windows either like the trainer's packed rows
(:func:`packed_windows`, the default) or as the first tokens of each document
(:func:`~tl_diffusion_prior.evaluate.fidelity.token_windows`, the paper's protocol), as
:func:`held_out_windows` does for an evaluation run. Documents may arrive as strings, dicts with a
``"text"`` key or objects with a ``text`` attribute.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
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


def heldout_texts() -> list[str]:
    """The packaged corpus's held-out documents."""
    return texts_of(corpus.load_corpus("heldout"))


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


def held_out_windows(
    model,
    settings: EvalSettings,
    priors: Sequence[Any] = (),
    heldout: Sequence[Any] | None = None,
    ood: Sequence[Any] | None = None,
) -> list[TokenSet]:
    """The in-domain (``"heldout"``) and the out-of-domain (``"pydoc"``) windows of a run.

    Args:
        model: Its tokenizer cuts the texts.
        settings: ``window_mode``, ``max_sequences``, ``windows_per_doc``, ``seed`` and the
            window length (``settings.resolved_seq_len(priors)``).
        priors: The priors evaluated (their capture context is the default window length).
        heldout / ood: The two sets of documents; default :func:`heldout_texts` and
            :func:`out_of_domain_texts`.
    """
    seq_len = settings.resolved_seq_len(priors)
    texts = {
        "heldout": heldout if heldout is not None else heldout_texts(),
        "pydoc": ood if ood is not None else out_of_domain_texts(),
    }
    if settings.window_mode == "packed":
        return [
            packed_windows(model, t, name, seq_len, settings.max_sequences, settings.seed)
            for name, t in texts.items()
        ]
    return [
        token_windows(model, t, name, seq_len, settings.max_sequences, settings.windows_per_doc)
        for name, t in texts.items()
    ]
