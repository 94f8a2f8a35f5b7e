"""Counter-based Gaussian noise: a pure function of (seed, sequence key, real position, dim).

On-manifold steering noises every steered activation before denoising it. Drawing that noise from a
stateful generator would make it depend on call order: generation without the KV cache recomputes
every earlier position at every step, and would re-noise them differently each time, so cached and
non-cached generation would disagree. Here each value is a hash of its coordinates instead, computed
for all steered positions at once with a few vectorised integer ops (no per-token Python loop, no
generator state and no host synchronisation).

The coordinates say what a position *is*, never where it sits in the batch:

* the **real position**, counted from the row's first real (unpadded) token;
* the **sequence key** (:func:`prefix_keys`): a hash of the row's content up to and including that
  position, read from the bits of the first block's input at each real position (the token and
  positional embeddings, a gather and an add, so bitwise the same in any batch and with any
  padding). The activation being steered depends on exactly this prefix, so the same prompt gives
  the same noise alone, twice in one batch, or left-padded among longer prompts, and two different
  prompts draw independent noise.

The hashing itself (:class:`~tl_diffusion_prior.core.counter_noise.PositionNoise`) lives in
:mod:`tl_diffusion_prior.core.counter_noise`, shared with the manifold score.
"""

from __future__ import annotations

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from tl_diffusion_prior.core.counter_noise import (
    GOLDEN,
    MASK32,
    MAX_SEED,
    PositionNoise,
    check_seed,
    fmix32,
    position_noise,
    vector_fingerprints,
)

__all__ = ["MAX_SEED", "PositionNoise", "check_seed", "position_noise", "prefix_keys"]


def prefix_keys(
    first_block_input: Float[Tensor, "batch pos d_model"],
    real: Bool[Tensor, "batch pos"],
    real_positions: Int[Tensor, "batch pos"],
    carry: Int[Tensor, " batch"] | None = None,
) -> Int[Tensor, "batch pos"]:
    """Each position's sequence key: a hash of the row's real positions up to and including it.

    Args:
        first_block_input: The residual entering ``blocks[0]`` in this forward pass.
        real: Which positions are real tokens (padding adds nothing to the key).
        real_positions: Positions counted from each row's first real token.
        carry: The key of each row's last position before this pass (under the KV cache), or
            None at the start of the sequence.

    The key is a sum modulo 2**32 of one hash per real position, of its fingerprint and its real
    position, so it is a pure function of the row's content and extends across cached passes by
    carrying the last key (a device tensor: no host synchronisation).
    """
    positions = real_positions.to(torch.int64) & MASK32
    terms = fmix32(vector_fingerprints(first_block_input) ^ fmix32((positions + GOLDEN) & MASK32))
    keys = torch.where(real, terms, 0).cumsum(dim=1)
    if carry is not None:
        keys = keys + carry[:, None]
    return keys & MASK32
