"""The interface every token source implements: resumable, shardable ``(batch, ctx)`` batches.

Capture (``fill_buffer``) and refills only need this interface; :class:`TextTokenSource
<tl_diffusion_prior.data.token_source.TextTokenSource>` is the packing implementation behind the
corpus, text-file and dataset sources.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Mapping
from typing import Any

from jaxtyping import Int
from torch import Tensor

from tl_diffusion_prior.core.validation import check_int


class TokenSource(abc.ABC):
    """An iterable of ``Int[Tensor, "batch ctx"]`` (``torch.long``) batches with a position.

    Attributes:
        batch_size: Rows per batch.
        ctx: Tokens per row.
        rank: This shard's index in ``[0, world_size)``.
        world_size: Number of shards the batches are dealt to.
    """

    batch_size: int
    ctx: int
    rank: int
    world_size: int

    @abc.abstractmethod
    def __iter__(self) -> Iterator[Int[Tensor, "batch ctx"]]:
        """Yield batches from the current position on."""

    @abc.abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """JSON-able position (and the settings it is only valid for)."""

    @abc.abstractmethod
    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Move to the position saved by ``state_dict()``."""

    @abc.abstractmethod
    def shard(self, rank: int, world_size: int) -> TokenSource:
        """A copy at the start that yields only shard ``rank`` of ``world_size``."""


def check_shard(rank: Any, world_size: Any) -> None:
    """Refuse a ``rank`` outside ``[0, world_size)`` or a ``world_size`` below 1."""
    check_int("world_size", world_size, minimum=1)
    check_int(
        "rank",
        rank,
        minimum=0,
        maximum=world_size - 1,
        hint=f"Pass the process's rank below world_size={world_size}, e.g. "
        "torch.distributed.get_rank().",
    )
