"""Binary token-level probing tasks built offline from text, and document-level splits.

Each task labels every token of a document 1 (positive), 0 (negative) or -1 (not part of the
task: e.g. a punctuation token for "capitalised mid-sentence", or a token that itself holds a
quotation mark for "inside a quotation", whose side of the quote is ambiguous). Labels are read
from the document's text and each token's character span, never from the model, so they can be
checked on hand-written text. Two tasks are about the document's corpus source (code against
everything else; literature against technical manuals), the rest about the token's place in its
text.

Splits are by document (:func:`document_split`, :func:`document_folds`): tokens of one document
are correlated (same topic, same register), so a probe tested on other tokens of a training
document would look better than it is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from tl_diffusion_prior.core.validation import check_float, check_int

Span = tuple[int, int]
#: A task's labeller: (text, spans, source) -> one label per span (1, 0 or -1).
Labeller = Callable[[str, Sequence[Span], "str | None"], list[int]]

_OPEN_QUOTES, _CLOSE_QUOTES, _QUOTE = "\u201c", "\u201d", '"'
_SENTENCE_END = ".!?"
_CLOSERS = "\"'\u201d\u2019)]"
LITERATURE_SOURCES = ("austen", "shakespeare")
MANUAL_SOURCES = ("sqlite_docs", "postgresql_docs", "git_docs", "man_pages")
CODE_SOURCES = ("python_code",)


def _inside(text: str, opens: str, closes: str, toggles: str = "") -> list[bool]:
    """For every character, whether it lies inside an opened pair (nesting counted; a toggle
    character opens when outside and closes when inside)."""
    depth, toggled, out = 0, False, []
    for char in text:
        out.append(depth > 0 or toggled)
        if char in opens:
            depth += 1
        elif char in closes:
            depth = max(0, depth - 1)
        elif char in toggles:
            toggled = not toggled
    return out


def _pair_labels(text: str, spans: Sequence[Span], marks: str, inside: list[bool]) -> list[int]:
    labels = []
    for start, end in spans:
        piece = text[start:end]
        if not piece.strip() or any(mark in piece for mark in marks):
            labels.append(-1)  # whitespace, or a token holding the mark: which side is unclear
        else:
            labels.append(int(inside[start]))
    return labels


def inside_quotation(text: str, spans: Sequence[Span], source: str | None = None) -> list[int]:
    """1 inside double quotes (straight or curly), 0 outside."""
    marks = _QUOTE + _OPEN_QUOTES + _CLOSE_QUOTES
    return _pair_labels(text, spans, marks, _inside(text, _OPEN_QUOTES, _CLOSE_QUOTES, _QUOTE))


def inside_parentheses(text: str, spans: Sequence[Span], source: str | None = None) -> list[int]:
    """1 inside round brackets (nested counted), 0 outside."""
    return _pair_labels(text, spans, "()", _inside(text, "(", ")"))


def _word_start(text: str, start: int, end: int) -> int | None:
    """Index of the token's first letter if the token begins a word (a letter after nothing or
    whitespace), else None."""
    first = start
    while first < end and text[first].isspace():
        first += 1
    if first >= end or not text[first].isalpha():
        return None
    if first > 0 and not text[first - 1].isspace():
        return None  # the token continues a word (or follows punctuation such as a quote)
    return first


def _previous_mark(text: str, index: int) -> str:
    """The last non-space character before ``index``, ``"\\n\\n"`` after a blank line, ``""`` at
    the start of the text."""
    k = index - 1
    while k >= 0 and text[k] in " \t":
        k -= 1
    if k < 0:
        return ""
    if text[k] == "\n":
        j = k - 1
        while j >= 0 and text[j] in " \t":
            j -= 1
        if j < 0 or text[j] == "\n":
            return "\n\n"
        return "\n"
    return text[k]


def _starts_sentence(text: str, first: int) -> bool:
    mark = _previous_mark(text, first)
    if mark in ("", "\n\n"):
        return True
    # A sentence may end inside closing quotes or brackets: ``now." Then``.
    k = first - 1
    while k >= 0 and (text[k] in " \t" or text[k] in _CLOSERS):
        k -= 1
    return k >= 0 and text[k] in _SENTENCE_END


def sentence_initial(text: str, spans: Sequence[Span], source: str | None = None) -> list[int]:
    """Over tokens that begin a word: 1 for a sentence's first word (after ``.``, ``!``, ``?``, a
    blank line or the text's start), 0 for any other word."""
    labels = []
    for start, end in spans:
        first = _word_start(text, start, end)
        labels.append(-1 if first is None else int(_starts_sentence(text, first)))
    return labels


def capitalised_mid_sentence(
    text: str, spans: Sequence[Span], source: str | None = None
) -> list[int]:
    """Over words inside a sentence (not its first word, not a line's first): 1 when the word is
    capitalised (a proper noun, mostly), 0 when lower case."""
    labels = []
    for start, end in spans:
        first = _word_start(text, start, end)
        if first is None or _starts_sentence(text, first) or _previous_mark(text, first) == "\n":
            labels.append(-1)
        else:
            labels.append(1 if text[first].isupper() else 0 if text[first].islower() else -1)
    return labels


def contains_digit(text: str, spans: Sequence[Span], source: str | None = None) -> list[int]:
    """1 for a token with a digit in it, 0 for any other non-blank token."""
    out = []
    for start, end in spans:
        piece = text[start:end]
        out.append(-1 if not piece.strip() else int(any(c.isdigit() for c in piece)))
    return out


def line_initial(text: str, spans: Sequence[Span], source: str | None = None) -> list[int]:
    """1 for the first non-blank token of a line, 0 for any later non-blank token."""
    labels = []
    for start, end in spans:
        piece = text[start:end]
        if not piece.strip():
            labels.append(-1)
            continue
        first = start + (len(piece) - len(piece.lstrip()))
        labels.append(int(_previous_mark(text, first) in ("", "\n", "\n\n")))
    return labels


def _source_task(positive: Sequence[str], negative: Sequence[str] | None) -> Labeller:
    def label(text: str, spans: Sequence[Span], source: str | None = None) -> list[int]:
        if source in positive:
            value = 1
        elif source is not None and (negative is None or source in negative):
            value = 0
        else:
            value = -1
        return [value] * len(spans)

    return label


@dataclass(frozen=True)
class ProbeTask:
    """A binary token-level task.

    Attributes:
        name: Short name for tables.
        description: What is positive, what negative.
        labeller: ``(text, spans, source) -> [1 | 0 | -1 per span]``.
    """

    name: str
    description: str
    labeller: Labeller


DEFAULT_TASKS: tuple[ProbeTask, ...] = (
    ProbeTask("code", "python_code source vs every other source", _source_task(CODE_SOURCES, None)),
    ProbeTask(
        "literature_vs_manuals",
        "Austen/Shakespeare vs the SQLite/PostgreSQL/Git/man-page manuals",
        _source_task(LITERATURE_SOURCES, MANUAL_SOURCES),
    ),
    ProbeTask("inside_quotation", "inside double quotes vs outside", inside_quotation),
    ProbeTask("inside_parentheses", "inside round brackets vs outside", inside_parentheses),
    ProbeTask("sentence_initial", "first word of a sentence vs other words", sentence_initial),
    ProbeTask(
        "capitalised_mid_sentence",
        "capitalised word inside a sentence vs lower-case word",
        capitalised_mid_sentence,
    ),
    ProbeTask("digit", "token with a digit vs other non-blank tokens", contains_digit),
    ProbeTask("line_initial", "first token of a line vs later tokens", line_initial),
)


def task_labels(
    task: ProbeTask,
    texts: Sequence[str],
    spans: Sequence[Sequence[Span]],
    sources: Sequence[str | None],
) -> Int[Tensor, " n"]:
    """The labels of every token of every document, concatenated in document order (the order
    of :class:`~tl_diffusion_prior.evaluate.token_rows.TokenRows`)."""
    out: list[int] = []
    for text, doc_spans, source in zip(texts, spans, sources, strict=True):
        labels = task.labeller(text, doc_spans, source)
        if len(labels) != len(doc_spans):
            raise ValueError(f"Task {task.name!r} gave {len(labels)} labels for {len(doc_spans)}.")
        out.extend(labels)
    return torch.tensor(out, dtype=torch.long)


def document_split(
    n_documents: int, test_fraction: float = 0.3, seed: int = 0
) -> Bool[Tensor, " d"]:
    """Whether each document is a test document: a random ``test_fraction`` of them (at least one
    on each side)."""
    check_int("n_documents", n_documents, 2, hint="A split needs a document on each side.")
    check_float("test_fraction", test_fraction, 0.0, 1.0, min_open=True, max_open=True)
    n_test = min(n_documents - 1, max(1, round(test_fraction * n_documents)))
    order = torch.randperm(n_documents, generator=torch.Generator().manual_seed(seed))
    is_test = torch.zeros(n_documents, dtype=torch.bool)
    is_test[order[:n_test]] = True
    return is_test


def document_folds(doc_ids: Int[Tensor, " n"], n_folds: int, seed: int = 0) -> Int[Tensor, " n"]:
    """A cross-validation fold per row such that all rows of a document share a fold (documents
    dealt round-robin in a random order, so the folds hold about equal numbers of documents)."""
    check_int("n_folds", n_folds, 2)
    unique, inverse = torch.unique(doc_ids, return_inverse=True)
    if unique.numel() < n_folds:
        raise ValueError(f"{unique.numel()} documents cannot fill n_folds={n_folds} folds.")
    order = torch.randperm(unique.numel(), generator=torch.Generator().manual_seed(seed))
    fold_of_doc = torch.empty(unique.numel(), dtype=torch.long)
    fold_of_doc[order] = torch.arange(unique.numel()) % n_folds
    return fold_of_doc[inverse]
