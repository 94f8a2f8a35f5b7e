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

The hash is murmur3's 32-bit finaliser (``fmix32``) applied to 32-bit words held in int64
tensors; products wrap modulo 2**64 and masking keeps the low 32 bits, which is the 32-bit product.
Two hashed words per pair of dims give two standard normals through the Box-Muller transform. This
is noise for a sampler, not cryptography: the finaliser has full avalanche, which is what matters.
"""

from __future__ import annotations

import math

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from tl_diffusion_prior.core.validation import check_int, check_positive_int

_MASK32 = 0xFFFFFFFF
_GOLDEN = 0x9E3779B9
#: Distinct constants so the two uniforms of a Box-Muller pair come from independent streams.
_STREAMS = (0x68E31DA4, 0xB5297A4D)
#: Stream of the per-dimension weights of :func:`prefix_keys`' fingerprints.
_FINGERPRINT_STREAM = 0x27D4EB2F
#: Integer views of float dtypes by item size, to read an activation's bits.
_BITS_BY_SIZE = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
MAX_SEED = 2**63 - 1


def _fmix32(x: Tensor) -> Tensor:
    """murmur3's finaliser on int64 tensors holding values in [0, 2**32)."""
    x = x ^ (x >> 16)
    x = (x * 0x85EBCA6B) & _MASK32
    x = x ^ (x >> 13)
    x = (x * 0xC2B2AE35) & _MASK32
    return x ^ (x >> 16)


def check_seed(seed: object) -> int:
    """``seed`` as an int in [0, 2**63), or a ValueError/TypeError saying what is wrong."""
    return check_int("seed", seed, 0, MAX_SEED, hint="Pass an int in [0, 2**63), or None.")


def _fingerprints(x: Float[Tensor, "batch pos d_model"]) -> Int[Tensor, "batch pos"]:
    """A 32-bit hash of each vector's exact bits (equal bits, equal hash; else almost surely not).

    A weighted sum of the bit patterns with odd pseudo-random weights per dimension, finalised: two
    different vectors collide with probability about 2**-32.
    """
    x = x.detach()
    size = x.element_size()
    bits = x.view(_BITS_BY_SIZE[size]).to(torch.int64)
    if size < 8:
        bits = bits & ((1 << (8 * size)) - 1)  # the bit pattern, not the sign-extended integer
    else:
        bits = (bits & _MASK32) ^ _fmix32((bits >> 32) & _MASK32)
    dims = torch.arange(x.shape[-1], dtype=torch.int64, device=x.device)
    weights = _fmix32(dims ^ _FINGERPRINT_STREAM) | 1
    return _fmix32((bits * weights).sum(-1) & _MASK32)


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
    positions = real_positions.to(torch.int64) & _MASK32
    terms = _fmix32(_fingerprints(first_block_input) ^ _fmix32((positions + _GOLDEN) & _MASK32))
    keys = torch.where(real, terms, 0).cumsum(dim=1)
    if carry is not None:
        keys = keys + carry[:, None]
    return keys & _MASK32


class PositionNoise:
    """Standard-normal noise of width ``d_model`` determined by (seed, sequence key, position).

    Args:
        seed: Any int in [0, 2**63).
        d_model: Width of each noise vector.
        device: Where the per-dimension keys live (and where the noise is made).

    The per-dimension keys depend only on the seed and are computed once here, so each call hashes
    just ``n`` key/position pairs and two ``[n, d_model / 2]`` grids.
    """

    def __init__(self, seed: int, d_model: int, device: torch.device | str = "cpu") -> None:
        self.seed = check_seed(seed)
        self.d_model = check_positive_int("d_model", d_model)
        self.device = torch.device(device)
        pairs = torch.arange((d_model + 1) // 2, dtype=torch.int64, device=self.device)
        seed_lo = torch.tensor(seed & _MASK32, dtype=torch.int64, device=self.device)
        seed_hi = torch.tensor(seed >> 32, dtype=torch.int64, device=self.device)
        keys = []
        for stream in _STREAMS:
            key = _fmix32(pairs ^ stream)
            key = _fmix32(key ^ seed_lo)
            keys.append(_fmix32(((key + _GOLDEN) & _MASK32) ^ seed_hi))
        self._keys = torch.stack(keys)  # [2, d_model / 2]

    def __call__(
        self, keys: Int[Tensor, " n"], positions: Int[Tensor, " n"]
    ) -> Float[Tensor, "n d_model"]:
        """Noise for each (sequence key, position) pair, float32 on ``keys``' device."""
        if keys.shape != positions.shape or keys.ndim != 1:
            raise ValueError(
                f"keys and positions must be 1-D and equally long, got {tuple(keys.shape)} and "
                f"{tuple(positions.shape)}."
            )
        device = keys.device
        dim_keys = self._keys if self._keys.device == device else self._keys.to(device)
        keys = keys.to(torch.int64) & _MASK32
        positions = positions.to(torch.int64) & _MASK32
        cell = _fmix32(positions ^ _fmix32((keys + _GOLDEN) & _MASK32))  # [n]
        bits = _fmix32(dim_keys[:, None, :] ^ cell[None, :, None])  # [2, n, d/2]
        # The top 24 bits, offset by half a step, give uniforms strictly inside (0, 1) that float32
        # represents exactly, so log() never sees 0.
        uniform = ((bits >> 8).to(torch.float32) + 0.5) * (1.0 / (1 << 24))
        radius = torch.sqrt(-2.0 * torch.log(uniform[0]))
        angle = (2.0 * math.pi) * uniform[1]
        noise = torch.cat([radius * torch.cos(angle), radius * torch.sin(angle)], dim=-1)
        return noise[:, : self.d_model]


def position_noise(
    seed: int,
    keys: Int[Tensor, " n"],
    positions: Int[Tensor, " n"],
    d_model: int,
) -> Float[Tensor, "n d_model"]:
    """One-off form of :class:`PositionNoise` (rebuilds the per-dimension keys every call)."""
    return PositionNoise(seed, d_model, keys.device)(keys, positions)
