"""Convenience constructors of ``TextTokenSource``: the packaged corpus, text files, HF datasets.

Each adapts its texts to what ``TextTokenSource`` reads (a ``Sequence`` when random access is cheap,
a re-iterable stream otherwise) and passes every other keyword on to it.
"""

from __future__ import annotations

import codecs
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from tl_diffusion_prior.core.validation import check_int
from tl_diffusion_prior.data.corpus import load_corpus
from tl_diffusion_prior.data.token_source import TextTokenSource


def corpus_token_source(
    tokenizer: Any,
    split: Literal["train", "heldout"] = "train",
    batch_size: int = 16,
    ctx: int = 128,
    sources: Sequence[str] | None = None,
    **kwargs: Any,
) -> TextTokenSource:
    """Token batches from the packaged corpus (``load_corpus(split, sources)``).

    The sources are mixed in proportion to their size, interleaved at the same relative pace so
    that any long enough stretch of batches has every source in its share. With all ten sources
    the shares of the training tokens are (``corpus_mix_shares()`` gives them in characters, the
    corpus README per source): austen 11.8 %, shakespeare 11.3 %, sqlite_docs 8.9 %,
    postgresql_docs 11.3 %, debian_handbook 4.9 %, debian_reference 2.7 %, git_docs 13.1 %,
    man_pages 12.5 %, fortunes 11.9 %, python_code 11.7 %: 43 % from the original four (novels,
    plays, SQL manuals), 57 % modern English, code, lists and tables. ``sources`` restricts the
    mix to some sources, keeping their relative proportions.

    ``kwargs`` go to ``TextTokenSource`` (``shuffle_seed``, ``epochs``, ``rank``, ...).
    """
    kwargs.setdefault("description", f"the packaged corpus (split={split!r}, sources={sources})")
    return TextTokenSource(load_corpus(split, sources), tokenizer, batch_size, ctx, **kwargs)


class _TextFiles:
    """Re-iterable texts of files, read lazily; files longer than ``max_chars`` come in parts cut
    at line breaks (a separator then goes between parts too: one token per part)."""

    def __init__(self, paths: Sequence[Path], encoding: str, max_chars: int):
        self.paths, self.encoding, self.max_chars = paths, encoding, max_chars

    def __iter__(self) -> Iterator[str]:
        for path in self.paths:
            try:
                yield from self._parts(path)
            except UnicodeDecodeError as error:
                raise _not_text(path, self.encoding, error) from error

    def _parts(self, path: Path) -> Iterator[str]:
        with open(path, encoding=self.encoding) as file:
            buffer = ""
            for chunk in iter(lambda f=file: f.read(self.max_chars), ""):
                buffer += chunk
                while len(buffer) > self.max_chars:
                    cut = buffer.rfind("\n", 0, self.max_chars) + 1 or self.max_chars
                    yield buffer[:cut]
                    buffer = buffer[cut:]
            if buffer:
                yield buffer


_SNIFF_BYTES = 65_536  # read from the start of each text file to refuse a binary one up front


def _not_text(path: Path, encoding: str, error: UnicodeDecodeError) -> ValueError:
    return ValueError(
        f"Text file {str(path)!r} is not {encoding} text ({error.reason} at byte "
        f"{error.start:,}); is it a binary file? Pass plain-text files, or the file's encoding "
        "(encoding=...)."
    )


def _check_looks_like_text(path: Path, encoding: str) -> None:
    """Refuse a file whose first bytes do not decode, or hold NUL bytes (binary), naming it."""
    with open(path, "rb") as file:
        head = file.read(_SNIFF_BYTES)
    try:
        # Incremental, so a character cut at the end of the sample is not an error.
        text = codecs.getincrementaldecoder(encoding)().decode(head, final=False)
    except UnicodeDecodeError as error:
        raise _not_text(path, encoding, error) from error
    if "\x00" in text:
        raise ValueError(
            f"Text file {str(path)!r} holds NUL bytes at character {text.index(chr(0)):,}: it "
            "looks binary, not text. Pass plain-text files."
        )


def text_file_token_source(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    tokenizer: Any,
    batch_size: int = 16,
    ctx: int = 128,
    encoding: str = "utf-8",
    max_document_chars: int = 1_000_000,
    **kwargs: Any,
) -> TextTokenSource:
    """Token batches from plain-text files, one document per file, streamed from disk.

    Args:
        paths: A file or a list of files.
        max_document_chars: Longer files are tokenised in parts of about this many characters.
        kwargs: Go to ``TextTokenSource``. ``shuffle_seed`` reads every file into memory first
            (to shuffle whole documents).
    """
    path_list = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    if not path_list:
        raise ValueError("paths must name at least one text file, got an empty list.")
    resolved = [Path(p) for p in path_list]
    missing = [str(p) for p in resolved if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"text_file_token_source: no such file(s): {missing}.")
    check_int("max_document_chars", max_document_chars, minimum=1)
    try:
        codecs.lookup(encoding)
    except LookupError as error:
        raise ValueError(
            f"encoding={encoding!r} is not a known text encoding; pass e.g. 'utf-8' or 'latin-1'."
        ) from error
    for path in resolved:
        _check_looks_like_text(path, encoding)
    kwargs.setdefault("description", f"the text file(s) {[str(p) for p in resolved]}")
    texts: Iterable[str] = _TextFiles(resolved, encoding, max_document_chars)
    if kwargs.get("shuffle_seed") is not None:
        texts = list(texts)
    return TextTokenSource(texts, tokenizer, batch_size, ctx, **kwargs)


class _ColumnSequence(Sequence):
    """One text column of a map-style ``datasets.Dataset``, as a lazy sequence of str."""

    def __init__(self, dataset: Any, column: str):
        self.dataset, self.column = dataset, column

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return self.dataset[int(index)][self.column]


class _ColumnStream:
    """One text column of a ``datasets.IterableDataset``, re-iterable."""

    def __init__(self, dataset: Any, column: str):
        self.dataset, self.column = dataset, column

    def __iter__(self) -> Iterator[str]:
        for row in self.dataset:
            if self.column not in row:
                raise ValueError(
                    f"text_column={self.column!r} is not in the dataset; its columns are "
                    f"{sorted(row)}."
                )
            yield row[self.column]


def hf_dataset_token_source(
    name: Any,
    tokenizer: Any,
    split: str = "train",
    text_column: str = "text",
    streaming: bool = True,
    batch_size: int = 16,
    ctx: int = 128,
    dataset_kwargs: Mapping[str, Any] | None = None,
    shuffle_buffer: int = 10_000,
    **kwargs: Any,
) -> TextTokenSource:
    """Token batches from a Hugging Face dataset (needs the ``datasets`` package, and a hub or
    local files for a name).

    Args:
        name: A dataset name or path for ``datasets.load_dataset`` (with ``split``, ``streaming``
            and ``dataset_kwargs``), or an already loaded ``Dataset`` / ``IterableDataset``.
        text_column: Column holding the text.
        streaming: Stream the dataset instead of downloading it whole (names only).
        shuffle_buffer: Buffer size for shuffling a streamed dataset when ``shuffle_seed`` is set;
            a map-style dataset is shuffled exactly.
        kwargs: Go to ``TextTokenSource``.
    """
    try:
        import datasets
    except ImportError as error:
        raise ValueError(
            "hf_dataset_token_source needs the 'datasets' package: pip install datasets."
        ) from error
    if isinstance(name, str | os.PathLike):
        dataset = datasets.load_dataset(
            str(name), split=split, streaming=streaming, **dict(dataset_kwargs or {})
        )
    else:
        dataset = name
    if isinstance(dataset, datasets.Dataset):
        if text_column not in dataset.column_names:
            raise ValueError(
                f"text_column={text_column!r} is not in the dataset; its columns are "
                f"{dataset.column_names}."
            )
        texts: Iterable[str] = _ColumnSequence(dataset, text_column)
    elif isinstance(dataset, datasets.IterableDataset):
        seed = kwargs.pop("shuffle_seed", None)
        if seed is not None:
            dataset = dataset.shuffle(seed=seed, buffer_size=shuffle_buffer)
        texts = _ColumnStream(dataset, text_column)
    else:
        raise TypeError(
            f"name must be a dataset name/path, a datasets.Dataset or a datasets.IterableDataset "
            f"(one split), got {type(dataset).__name__}; pick a split, e.g. dataset['train']."
        )
    kwargs.setdefault("description", f"the dataset {name!r} (column {text_column!r})")
    return TextTokenSource(texts, tokenizer, batch_size, ctx, **kwargs)
