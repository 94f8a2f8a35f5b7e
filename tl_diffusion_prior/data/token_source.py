"""Token sources: packed ``(batch, ctx)`` token batches from text, resumable and shardable.

Packing. Every document is tokenised without special tokens and the documents are concatenated
into one stream per epoch, ``doc_1 SEP doc_2 SEP ...``, where SEP is the tokenizer's EOS token by
default (``separator=``), so a row that spans two documents shows where one ends. Each row is BOS
followed by the next ``ctx - 1`` stream tokens (``ctx`` tokens when ``prepend_bos=False``): rows
start mid-document, as in language-model pretraining, and no token is padding. Tokens left at the
end of an epoch (less than one row) are dropped; batches run on across epochs, so only the very
last batch of a finite source can be short (and ``drop_remainder`` drops it).

Sharding. The sequence of batches is dealt round-robin: with ``world_size`` W, rank r yields
batches r, r + W, r + 2W, ... of the unsharded source, so ranks never share a batch and together
see all of them. With ``drop_remainder`` a last incomplete round is dropped, so every rank yields
the same number of batches (distributed training would hang otherwise). Each rank tokenises the
whole stream, which costs seconds for the few million tokens of the default corpus.

Too little text. A pass that starts at the first batch and yields none raises a ``ValueError``
saying how many tokens the texts gave and how many one batch needs, instead of ending silently.

Resuming. A source remembers how many batches it has yielded; ``state_dict()`` is a small JSON-able
dict and ``load_state_dict()`` makes the next batch the one that would have come next. Iterating
again continues from the current position; ``reset()`` goes back to the start.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch
from jaxtyping import Int
from torch import Tensor

from tl_diffusion_prior.core.validation import check_int
from tl_diffusion_prior.data.corpus import Document
from tl_diffusion_prior.data.source_base import TokenSource, check_shard

STATE_FORMAT_VERSION = 1
_ROWS_PER_BLOCK = 256  # rows cut from the stream at a time: large enough for fast numpy slicing


def _as_text(item: Any) -> str:
    if isinstance(item, str):
        return item
    if isinstance(item, Document):
        return item.text
    raise TypeError(
        f"texts must contain str or Document items, got {type(item).__name__}; for a dataset pass "
        "its text column (see hf_dataset_token_source)."
    )


class TextTokenSource(TokenSource):
    """Packed token batches from texts or ``Document``s (see the module docstring for packing).

    Args:
        texts: The documents. A ``Sequence`` (list, tuple, ``load_corpus()``) is tokenised once
            and its tokens kept in memory, which makes epochs, shuffling and resuming cheap. Any
            other iterable is streamed and tokenised again each epoch; it must be re-iterable
            when ``epochs != 1``, and cannot be shuffled here.
        tokenizer: A Hugging Face tokenizer, e.g. ``model.tokenizer`` of a HookedTransformer.
        batch_size: Rows per batch.
        ctx: Tokens per row, BOS included.
        prepend_bos: Put ``tokenizer.bos_token_id`` at position 0 of every row.
        separator: Token placed after every document: ``"eos"`` (default), ``"bos"``, a token
            id, or ``"none"`` to concatenate documents directly.
        shuffle_seed: If set, documents are shuffled with this seed, differently every epoch
            (and reproducibly). ``None`` keeps the given order.
        drop_remainder: Drop the last batch if it is short (and, when sharded, the last round
            if some rank would get no batch in it).
        epochs: Passes over the texts; ``None`` repeats forever.
        rank: This shard's index (see ``shard``).
        world_size: Number of shards.
        encode_batch: Documents tokenised per call of the tokenizer.
        description: What the texts are (e.g. which files), for error messages.
    """

    def __init__(
        self,
        texts: Iterable[str] | Iterable[Document],
        tokenizer: Any,
        batch_size: int,
        ctx: int,
        prepend_bos: bool = True,
        shuffle_seed: int | None = None,
        drop_remainder: bool = True,
        *,
        separator: Literal["eos", "bos", "none"] | int = "eos",
        epochs: int | None = 1,
        rank: int = 0,
        world_size: int = 1,
        encode_batch: int = 64,
        description: str | None = None,
    ):
        if isinstance(texts, str | bytes):
            raise TypeError(
                "texts must be an iterable of documents, got a single string; wrap it: [text]."
            )
        if not isinstance(texts, Iterable):
            raise TypeError(f"texts must be an iterable of str or Document, got {type(texts)}.")
        if not callable(tokenizer):
            raise TypeError(
                f"tokenizer must be a Hugging Face tokenizer (callable), got {type(tokenizer)}."
            )
        check_int("batch_size", batch_size, minimum=1)
        check_int("ctx", ctx, minimum=2 if prepend_bos else 1)
        check_int("encode_batch", encode_batch, minimum=1)
        if epochs is not None:
            check_int("epochs", epochs, minimum=1)
        check_shard(rank, world_size)
        self._is_sequence = isinstance(texts, Sequence)
        if shuffle_seed is not None and not self._is_sequence:
            raise ValueError(
                f"shuffle_seed={shuffle_seed} needs texts to be a Sequence, got "
                f"{type(texts).__name__}; pass list(texts), or shuffle the stream itself."
            )
        if not self._is_sequence and iter(texts) is texts and epochs != 1:
            raise ValueError(
                f"epochs={epochs} needs re-iterable texts, but a one-shot iterator "
                f"({type(texts).__name__}) was given; pass a list or a re-iterable object."
            )
        self.texts = texts
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.ctx = ctx
        self.prepend_bos = prepend_bos
        self.separator = separator
        self.shuffle_seed = shuffle_seed
        self.drop_remainder = drop_remainder
        self.epochs = epochs
        self.rank = rank
        self.world_size = world_size
        self.encode_batch = encode_batch
        self.description = description or (
            f"the {len(texts)} text(s) given" if self._is_sequence else "the texts given"
        )
        self.bos_token_id = self._special_id("bos") if prepend_bos else None
        self.separator_id = self._separator_id(separator)
        self._cache: list[np.ndarray | None] | None = (
            [None] * len(texts) if self._is_sequence else None
        )
        self._batches_yielded = 0
        self._pass_tokens = 0  # stream tokens (separators included) of the first epoch

    # ------------------------------------------------------------------ settings

    def _special_id(self, which: Literal["bos", "eos"]) -> int:
        token_id = getattr(self.tokenizer, f"{which}_token_id", None)
        if token_id is None:
            raise ValueError(
                f"The tokenizer has no {which}_token_id, which "
                + ("prepend_bos=True" if which == "bos" else f"separator={which!r}")
                + " needs; set it on the tokenizer, or pass "
                + ("prepend_bos=False." if which == "bos" else "separator=<token id> or 'none'.")
            )
        return int(token_id)

    def _separator_id(self, separator: Any) -> int | None:
        if separator == "none":
            return None
        if separator in ("eos", "bos"):
            return self._special_id(separator)
        if isinstance(separator, int) and not isinstance(separator, bool) and separator >= 0:
            return separator
        raise ValueError(
            f"separator must be 'eos', 'bos', 'none' or a token id >= 0, got {separator!r}."
        )

    @property
    def row_tokens(self) -> int:
        """Stream tokens per row (``ctx`` less the BOS)."""
        return self.ctx - 1 if self.prepend_bos else self.ctx

    # ------------------------------------------------------------------ tokenising

    def _encode(self, texts: list[str]) -> list[np.ndarray]:
        encoded = self.tokenizer(
            texts, add_special_tokens=False, return_attention_mask=False, verbose=False
        )["input_ids"]
        return [np.asarray(ids, dtype=np.int64) for ids in encoded]

    def _ensure_cached(self, indices: Sequence[int]) -> None:
        missing = [i for i in indices if self._cache[i] is None]
        for start in range(0, len(missing), self.encode_batch):
            chunk = missing[start : start + self.encode_batch]
            encoded = self._encode([_as_text(self.texts[i]) for i in chunk])
            for index, ids in zip(chunk, encoded, strict=True):
                self._cache[index] = ids

    def _document_order(self, epoch: int) -> list[int]:
        if self.shuffle_seed is None:
            return list(range(len(self.texts)))
        rng = np.random.default_rng([self.shuffle_seed, epoch])
        return rng.permutation(len(self.texts)).tolist()

    def _documents(self, epoch: int) -> Iterator[np.ndarray]:
        """Token arrays of one epoch's documents, in order, empty documents left out."""
        if self._is_sequence:
            order = self._document_order(epoch)
            for start in range(0, len(order), self.encode_batch):
                chunk = order[start : start + self.encode_batch]
                self._ensure_cached(chunk)
                yield from (self._cache[i] for i in chunk if len(self._cache[i]))
            return
        items = iter(self.texts)
        while chunk := [_as_text(item) for item in itertools.islice(items, self.encode_batch)]:
            yield from (ids for ids in self._encode(chunk) if len(ids))

    def rows_per_epoch(self) -> int:
        """Rows one epoch gives (tokenises every document of a Sequence; not for streams)."""
        if not self._is_sequence:
            raise ValueError(
                "rows_per_epoch() needs texts to be a Sequence; a stream's is unknown."
            )
        self._ensure_cached(range(len(self.texts)))
        extra = 0 if self.separator_id is None else 1
        stream = sum(len(ids) + extra for ids in self._cache if len(ids))
        return stream // self.row_tokens

    # ------------------------------------------------------------------ packing

    def _epoch_rows(self, epoch: int) -> Iterator[np.ndarray]:
        """Blocks of packed rows, ``(n, ctx)`` each, for one epoch."""
        width = self.row_tokens
        pending: list[np.ndarray] = []
        pending_len = 0
        separator = None if self.separator_id is None else np.array([self.separator_id])
        for ids in self._documents(epoch):
            pending.append(ids)
            pending_len += len(ids)
            if separator is not None:
                pending.append(separator)
                pending_len += 1
            if epoch == 0:  # for the error message when nothing could be packed
                self._pass_tokens += len(ids) + (separator is not None)
            if pending_len >= width * _ROWS_PER_BLOCK:
                block, pending, pending_len = self._cut_rows(pending, pending_len)
                yield block
        if pending_len >= width:
            yield self._cut_rows(pending, pending_len)[0]

    def _cut_rows(
        self, pending: list[np.ndarray], pending_len: int
    ) -> tuple[np.ndarray, list[np.ndarray], int]:
        width = self.row_tokens
        stream = np.concatenate(pending)
        n_rows = pending_len // width
        body = stream[: n_rows * width].reshape(n_rows, width)
        if self.prepend_bos:
            rows = np.empty((n_rows, self.ctx), dtype=np.int64)
            rows[:, 0] = self.bos_token_id
            rows[:, 1:] = body
        else:
            rows = body.copy()
        rest = stream[n_rows * width :]
        return rows, [rest], len(rest)

    def _rows_from(self, start_row: int) -> Iterator[np.ndarray]:
        """Row blocks of all epochs, starting at global row ``start_row``."""
        epoch = 0
        if start_row and self._is_sequence:  # jump over whole epochs without packing them
            per_epoch = self.rows_per_epoch()
            if per_epoch == 0:
                return
            epoch, start_row = divmod(start_row, per_epoch)
        epochs = itertools.count(epoch) if self.epochs is None else range(epoch, self.epochs)
        for epoch in epochs:
            produced = 0
            for block in self._epoch_rows(epoch):
                produced += len(block)
                if start_row >= len(block):
                    start_row -= len(block)
                    continue
                yield block[start_row:]
                start_row = 0
            if produced == 0:  # nothing to pack: repeating would spin forever
                return

    def _global_batches(self, start_batch: int) -> Iterator[np.ndarray]:
        """All batches of the unsharded source from global batch ``start_batch`` on."""
        buffer: list[np.ndarray] = []
        buffered = 0
        for block in self._rows_from(start_batch * self.batch_size):
            buffer.append(block)
            buffered += len(block)
            if buffered >= self.batch_size:
                rows = np.concatenate(buffer)
                n_full = len(rows) // self.batch_size
                yield from rows[: n_full * self.batch_size].reshape(n_full, self.batch_size, -1)
                buffer, buffered = [rows[n_full * self.batch_size :]], len(rows) % self.batch_size
        if buffered and not self.drop_remainder:
            yield np.concatenate(buffer)

    # ------------------------------------------------------------------ TokenSource

    def __iter__(self) -> Iterator[Int[Tensor, "batch ctx"]]:
        from_start = self._batches_yielded == 0
        self._pass_tokens = 0
        batches = self._global_batches(self._batches_yielded * self.world_size)
        while True:
            round_ = list(itertools.islice(batches, self.world_size))
            complete = len(round_) == self.world_size and len(round_[-1]) == self.batch_size
            if not round_ or (self.drop_remainder and not complete) or len(round_) <= self.rank:
                if from_start and self._batches_yielded == 0:
                    raise ValueError(self._shortfall_message())
                return
            self._batches_yielded += 1
            yield torch.from_numpy(np.ascontiguousarray(round_[self.rank]))

    def _shortfall_message(self) -> str:
        """Why a pass from the start yielded no batch: tokens given against tokens needed."""
        if not self.drop_remainder:
            rows, who = self.rank * self.batch_size + 1, f"a batch for rank {self.rank}"
        elif self.world_size > 1:
            rows = self.batch_size * self.world_size
            who = f"a batch on each of world_size={self.world_size} ranks"
        else:
            rows, who = self.batch_size, f"one batch of batch_size={self.batch_size}"
        epochs = "" if self.epochs == 1 else f" per epoch over epochs={self.epochs}"
        bos = ", less the BOS" if self.prepend_bos else ""
        return (
            f"{self.description} holds too little text for one batch: it gave "
            f"{self._pass_tokens:,} tokens{epochs} (separators included), but {who} needs {rows} "
            f"row(s) of {self.row_tokens} tokens (ctx={self.ctx}{bos}) = "
            f"{rows * self.row_tokens:,}. Add text, or lower batch_size / ctx (--batch-size / "
            "--ctx on the command line)."
        )

    def _settings(self) -> dict[str, Any]:
        settings = {
            "batch_size": self.batch_size,
            "ctx": self.ctx,
            "prepend_bos": self.prepend_bos,
            "separator": self.separator,
            "shuffle_seed": self.shuffle_seed,
            "drop_remainder": self.drop_remainder,
            "epochs": self.epochs,
            "rank": self.rank,
            "world_size": self.world_size,
        }
        if self._is_sequence:
            settings["num_texts"] = len(self.texts)
        return settings

    def state_dict(self) -> dict[str, Any]:
        return {
            "kind": type(self).__name__,
            "format_version": STATE_FORMAT_VERSION,
            "batches_yielded": self._batches_yielded,
            **self._settings(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if not isinstance(state, Mapping) or state.get("kind") != type(self).__name__:
            raise ValueError(
                f"state must come from {type(self).__name__}.state_dict(), got "
                f"{dict(state) if isinstance(state, Mapping) else type(state)}."
            )
        mismatched = {
            key: (state.get(key), value)
            for key, value in self._settings().items()
            if state.get(key) != value
        }
        if mismatched:
            detail = ", ".join(f"{k}: saved {s!r}, here {h!r}" for k, (s, h) in mismatched.items())
            raise ValueError(
                f"Cannot resume exactly: the saved state was made with other settings ({detail}). "
                "Rebuild the source with the saved settings."
            )
        position = state.get("batches_yielded")
        check_int("state['batches_yielded']", position, minimum=0)
        self._batches_yielded = position

    def shard(self, rank: int, world_size: int) -> TextTokenSource:
        """A copy at the start that yields batches ``rank, rank + world_size, ...`` only.

        The copy shares the texts, tokenizer and token cache (read-only after tokenising).
        """
        check_shard(rank, world_size)
        sharded = copy.copy(self)
        sharded.rank, sharded.world_size, sharded._batches_yielded = rank, world_size, 0
        return sharded

    def reset(self) -> None:
        """Go back to the first batch."""
        self._batches_yielded = 0
