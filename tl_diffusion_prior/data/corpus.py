"""The default English corpus that ships with the package, and two out-of-domain sets.

The corpus mixes ten sources of clearly different kinds so that a prior trained on it sees more
than one register: Jane Austen's novels (chapters), Shakespeare's plays (scenes), the SQLite and
PostgreSQL manuals (pages), the Debian Administrator's Handbook (modern expository prose), the
Debian Reference (how-to instructions and tables), Git's manuals (command reference and how-tos),
the Linux man-pages, the fortune collections (quotations, jokes and short dialogues) and Python
code (the networkx library). It lives in ``corpus_data/`` as one ``<source>.jsonl.xz`` per source
(5.1 MB; 20.5M characters, 5.1M SmolLM2 tokens for training), built by
``scripts/build_corpus.py`` (in the repository, not the wheel); provenance, licences and the
per-source statistics are in ``corpus_data/README.md``.
Every source was split by document at build time: 5 % of the documents (10 % for the two small
Debian books), spread over the whole source, are held out, and no training document is held out.

Mixing: ``load_corpus`` interleaves the sources in proportion to their size, and the sizes were
chosen at build time (a character budget per source), so the proportions are fixed and
documented: ``corpus_mix_shares()`` gives each source's share of the training characters, and the
README its share of the training tokens (between 2.7 % and 13.1 %: 43 % from the original four
sources, 57 % from the six modern ones).

Two out-of-domain sets (``out_of_domain_sets()``), never trained on: ``"pydoc"``, the topics of
``pydoc_data.topics`` (Python's language reference as plain text, shipped with CPython), and
``"conversations"``, the ChatterBot corpus's English chat exchanges (packaged in ``corpus_data``
as ``ood_conversations.jsonl.xz``, outside the training sources).
"""

from __future__ import annotations

import functools
import hashlib
import json
import lzma
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal

from tl_diffusion_prior.constants import CORPUS_DIRNAME, CORPUS_MANIFEST_NAME

SPLITS = ("train", "heldout")
OUT_OF_DOMAIN_SOURCE = "pydoc_topics"  # the ``source`` of the pydoc set's documents
OUT_OF_DOMAIN_SETS = ("pydoc", "conversations")  # the names ``out_of_domain_sets()`` returns
_DATA_PACKAGE = "tl_diffusion_prior.data"
_SUMMARY_BATCH = 64
_MIN_OOD_CHARS = 200


@dataclass(frozen=True)
class Document:
    """One document: a chapter, a scene or a documentation page.

    Attributes:
        text: The document's plain text (paragraphs separated by blank lines).
        source: The corpus source it comes from, e.g. ``"austen"``.
        title: A human-readable title, unique within its source.
    """

    text: str
    source: str
    title: str


def _data_file(name: str):
    return resources.files(_DATA_PACKAGE).joinpath(CORPUS_DIRNAME, name)


@functools.cache
def _manifest() -> dict[str, Any]:
    return json.loads(_data_file(CORPUS_MANIFEST_NAME).read_text(encoding="utf-8"))


def corpus_sources() -> list[str]:
    """Names of the corpus's sources, in a fixed order."""
    return list(_manifest()["sources"])


def corpus_source_info() -> dict[str, dict[str, Any]]:
    """Per source: description, kind of writing, licence, origin package and document counts."""
    return json.loads(json.dumps(_manifest()["sources"]))


def _read_records(entry: dict[str, Any]) -> list[dict[str, str]]:
    """The JSON records of one packaged ``.jsonl.xz`` file, after checking its sha256."""
    compressed = _data_file(entry["file"]).read_bytes()
    digest = hashlib.sha256(compressed).hexdigest()
    if digest != entry["sha256"]:
        raise ValueError(
            f"Corpus file {entry['file']!r} is damaged: sha256 {digest} differs from the "
            f"manifest's {entry['sha256']}. Reinstall tl-diffusion-prior or rebuild the corpus "
            "with scripts/build_corpus.py in the repository."
        )
    return [json.loads(line) for line in lzma.decompress(compressed).decode("utf-8").splitlines()]


@functools.cache
def _read_source(source: str) -> dict[str, tuple[Document, ...]]:
    by_split: dict[str, list[Document]] = {split: [] for split in SPLITS}
    for record in _read_records(_manifest()["sources"][source]):
        by_split[record["split"]].append(Document(record["text"], source, record["title"]))
    return {split: tuple(docs) for split, docs in by_split.items()}


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}.")


def _check_sources(sources: Sequence[str] | None) -> list[str]:
    available = corpus_sources()
    if sources is None:
        return available
    if isinstance(sources, str):
        raise TypeError(f"sources must be a sequence of source names, got the string {sources!r}.")
    unknown = [s for s in sources if s not in available]
    if unknown or not sources:
        raise ValueError(
            f"sources must be a non-empty subset of {available}, got {list(sources)!r}"
            + (f" (unknown: {unknown})." if unknown else ".")
        )
    return [s for s in available if s in sources]


def _interleave(per_source: list[list[Document]]) -> list[Document]:
    """Merge sources so each advances at the same relative pace: any prefix has every source in
    about its overall share of characters."""
    keyed = []
    for source_index, docs in enumerate(per_source):
        total = sum(len(doc.text) for doc in docs) or 1
        done = 0
        for doc in docs:
            keyed.append(((done + len(doc.text) / 2) / total, source_index, doc))
            done += len(doc.text)
    keyed.sort(key=lambda item: (item[0], item[1]))
    return [doc for _, _, doc in keyed]


def load_corpus(
    split: Literal["train", "heldout"] = "train",
    sources: Sequence[str] | None = None,
) -> list[Document]:
    """Load one split of the packaged corpus, documents mixed across sources.

    Within each source the documents are shuffled with a fixed seed (so a prefix is not one novel
    or one play), then the sources are interleaved in proportion to their size. The order is the
    same on every call and every machine.

    Args:
        split: ``"train"`` or ``"heldout"``; the two never share a document.
        sources: Source names to include (see ``corpus_sources()``); ``None`` for all.
    """
    _check_split(split)
    per_source = []
    for source in _check_sources(sources):
        docs = list(_read_source(source)[split])
        random.Random(f"tl_diffusion_prior.data.corpus:{source}:{split}").shuffle(docs)
        per_source.append(docs)
    return _interleave(per_source)


def corpus_mix_shares(split: Literal["train", "heldout"] = "train") -> dict[str, float]:
    """Each source's share of the characters of ``load_corpus(split)``, which is also its share
    of any long enough prefix (the sources are interleaved at the same relative pace).

    Training characters: austen 12.8 %, shakespeare 9.1 %, sqlite_docs 8.9 %, postgresql_docs
    11.2 %, debian_handbook 5.0 %, debian_reference 2.3 %, git_docs 12.6 %, man_pages 16.2 %,
    fortunes 11.1 %, python_code 10.7 %. Training tokens (SmolLM2; ``corpus_data/README.md``):
    11.8, 11.3, 8.9, 11.3, 4.9, 2.7, 13.1, 12.5, 11.9 and 11.7 % in the same order.
    """
    _check_split(split)
    sizes = {s: sum(len(d.text) for d in _read_source(s)[split]) for s in corpus_sources()}
    total = sum(sizes.values())
    return {source: size / total for source, size in sizes.items()}


def count_tokens(texts: Sequence[str], tokenizer: Any) -> int:
    """Number of tokens ``tokenizer`` (an HF tokenizer) gives ``texts``, without special tokens."""
    total = 0
    for start in range(0, len(texts), _SUMMARY_BATCH):
        chunk = list(texts[start : start + _SUMMARY_BATCH])
        encoded = tokenizer(chunk, add_special_tokens=False, verbose=False)["input_ids"]
        total += sum(len(ids) for ids in encoded)
    return total


def corpus_summary(tokenizer: Any = None) -> dict[str, dict[str, dict[str, int]]]:
    """Size of every source and split.

    Returns ``{source: {split: {"documents": n, "characters": n[, "tokens": n]}}}``; a ``"total"``
    entry sums the sources. Tokens are counted only when an HF ``tokenizer`` is given
    (without special tokens, so BOS/separators come on top).
    """
    summary: dict[str, dict[str, dict[str, int]]] = {}
    total = {split: {"documents": 0, "characters": 0} for split in SPLITS}
    for source in corpus_sources():
        summary[source] = {}
        for split in SPLITS:
            docs = _read_source(source)[split]
            row = {"documents": len(docs), "characters": sum(len(d.text) for d in docs)}
            if tokenizer is not None:
                row["tokens"] = count_tokens([d.text for d in docs], tokenizer)
            summary[source][split] = row
            for key, value in row.items():
                total[split][key] = total[split].get(key, 0) + value
    summary["total"] = total
    return summary


_UNDERLINE = re.compile(r"^[*=\-^~\"#+]{3,}$")
_LIST_ITEM = re.compile(r"^(\* |- |\d+\. )")


def _reflow_pydoc(text: str) -> list[str]:
    """Paragraphs of a pydoc topic: wrapped prose joined into lines, indented blocks kept."""
    paragraphs = []
    for block in re.split(r"\n\s*\n", text):
        lines = [line for line in block.split("\n") if not _UNDERLINE.match(line.strip())]
        if not any(line.strip() for line in lines):
            continue
        if all(line.startswith(" ") for line in lines if line.strip()):
            paragraphs.append("\n".join(line.rstrip() for line in lines).strip("\n"))
            continue
        out: list[str] = []
        for line in lines:
            stripped = re.sub(r"(?<=\S)  +", " ", line.strip())
            if not out or _LIST_ITEM.match(stripped):
                out.append(stripped)
            elif re.search(r"[a-z]-$", out[-1]):  # a word hyphenated across lines
                out[-1] += stripped
            else:
                out[-1] = f"{out[-1]} {stripped}"
        paragraphs.append("\n".join(out))
    return paragraphs


@functools.cache
def _pydoc_documents() -> tuple[Document, ...]:
    try:
        from pydoc_data.topics import topics
    except ImportError as error:  # some OS builds of Python leave pydoc_data out
        raise ValueError(
            "out_of_domain_texts() needs the standard-library module pydoc_data.topics, which this "
            "Python does not have; use a python.org/pyenv/conda build of CPython."
        ) from error
    # Topics overlap (e.g. "compound" contains "while"): keep each paragraph once, larger topics
    # first, so the held-out text has no repeats.
    seen: set[str] = set()
    kept = {}
    for name in sorted(topics, key=lambda n: (-len(topics[n]), n)):
        fresh = []
        for paragraph in _reflow_pydoc(topics[name]):
            if paragraph not in seen:
                seen.add(paragraph)
                fresh.append(paragraph)
        text = "\n\n".join(fresh)
        if len(text) >= _MIN_OOD_CHARS:
            kept[name] = text
    return tuple(Document(kept[name], OUT_OF_DOMAIN_SOURCE, name) for name in sorted(kept))


def out_of_domain_texts() -> list[Document]:
    """Python's language-reference topics (``pydoc_data.topics``) as cleaned documents.

    Modern technical English that none of the corpus sources contains: use it to measure how a
    prior trained on the corpus does off its training distribution.
    """
    return list(_pydoc_documents())


@functools.cache
def _conversation_documents() -> tuple[Document, ...]:
    entry = _manifest()["out_of_domain"]["conversations"]
    return tuple(
        Document(record["text"], "conversations", record["title"])
        for record in _read_records(entry)
    )


def out_of_domain_info() -> dict[str, dict[str, Any]]:
    """Description, kind, licence and origin of the packaged out-of-domain set(s)."""
    return json.loads(json.dumps(_manifest()["out_of_domain"]))


def out_of_domain_sets() -> dict[str, list[Document]]:
    """Every out-of-domain set by name, in the order of ``OUT_OF_DOMAIN_SETS`` (pydoc first).

    - ``"pydoc"``: Python's language reference (``out_of_domain_texts()``, read from CPython's
      ``pydoc_data.topics``): dense technical prose about one programming language.
    - ``"conversations"``: the ChatterBot corpus's English chat exchanges (short turns between
      speakers ``A:`` and ``B:``, one topic per document), packaged apart from the training
      sources: modern conversational English, unlike pydoc and every training source.

    No training or held-out document of the corpus shares a paragraph with either set.
    """
    return {"pydoc": out_of_domain_texts(), "conversations": list(_conversation_documents())}
