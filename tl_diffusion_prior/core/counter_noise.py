"""Counter-based Gaussian noise: standard normals that are a pure function of their coordinates.

Each value is a hash of (seed, a 32-bit key, a 32-bit position, dimension), computed for many
vectors at once with a few vectorised integer ops: no generator state, no per-row Python loop and
no host synchronisation. Steering keys it on a row's content and position
(:mod:`tl_diffusion_prior.steering.noise`), the manifold score on the activation itself or on its
token (:mod:`tl_diffusion_prior.priors.score`), so the noise a vector gets never depends on where it
sits in a batch or on what else is in it.

The hash is murmur3's 32-bit finaliser (``fmix32``) applied to 32-bit words held in int64
tensors; products wrap modulo 2**64 and masking keeps the low 32 bits, which is the 32-bit product.
Two hashed words per pair of dims give two standard normals through the Box-Muller transform. This
is noise for a sampler, not cryptography: the finaliser has full avalanche, which is what matters.
"""

from __future__ import annotations

import math

import torch
from jaxtyping import Float, Int
from torch import Tensor

from tl_diffusion_prior.core.validation import check_int, check_positive_int

MASK32 = 0xFFFFFFFF
GOLDEN = 0x9E3779B9
#: Distinct constants so the two uniforms of a Box-Muller pair come from independent streams.
_STREAMS = (0x68E31DA4, 0xB5297A4D)
#: Stream of the per-dimension weights of :func:`vector_fingerprints`.
_FINGERPRINT_STREAM = 0x27D4EB2F
#: Integer views of float dtypes by item size, to read a vector's bits.
_BITS_BY_SIZE = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
MAX_SEED = 2**63 - 1


def fmix32(x: Tensor) -> Tensor:
    """murmur3's finaliser on int64 tensors holding values in [0, 2**32)."""
    x = x ^ (x >> 16)
    x = (x * 0x85EBCA6B) & MASK32
    x = x ^ (x >> 13)
    x = (x * 0xC2B2AE35) & MASK32
    return x ^ (x >> 16)


def check_seed(seed: object) -> int:
    """``seed`` as an int in [0, 2**63), or a ValueError/TypeError saying what is wrong."""
    return check_int("seed", seed, 0, MAX_SEED, hint="Pass an int in [0, 2**63), or None.")


def vector_fingerprints(x: Float[Tensor, "*batch d"]) -> Int[Tensor, "*batch"]:
    """A 32-bit hash of each vector's exact bits (equal bits, equal hash; else almost surely not).

    A weighted sum of the bit patterns with odd pseudo-random weights per dimension, finalised: two
    different vectors collide with probability about 2**-32.
    """
    x = x.detach()
    size = x.element_size()
    bits = x.contiguous().view(_BITS_BY_SIZE[size]).to(torch.int64)
    if size < 8:
        bits = bits & ((1 << (8 * size)) - 1)  # the bit pattern, not the sign-extended integer
    else:
        bits = (bits & MASK32) ^ fmix32((bits >> 32) & MASK32)
    dims = torch.arange(x.shape[-1], dtype=torch.int64, device=x.device)
    weights = fmix32(dims ^ _FINGERPRINT_STREAM) | 1
    return fmix32((bits * weights).sum(-1) & MASK32)


class PositionNoise:
    """Standard-normal noise of width ``d_model`` determined by (seed, key, position).

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
        seed_lo = torch.tensor(seed & MASK32, dtype=torch.int64, device=self.device)
        seed_hi = torch.tensor(seed >> 32, dtype=torch.int64, device=self.device)
        keys = []
        for stream in _STREAMS:
            key = fmix32(pairs ^ stream)
            key = fmix32(key ^ seed_lo)
            keys.append(fmix32(((key + GOLDEN) & MASK32) ^ seed_hi))
        self._keys = torch.stack(keys)  # [2, d_model / 2]

    def __call__(
        self, keys: Int[Tensor, " n"], positions: Int[Tensor, " n"]
    ) -> Float[Tensor, "n d_model"]:
        """Noise for each (key, position) pair, float32 on ``keys``' device."""
        if keys.shape != positions.shape or keys.ndim != 1:
            raise ValueError(
                f"keys and positions must be 1-D and equally long, got {tuple(keys.shape)} and "
                f"{tuple(positions.shape)}."
            )
        device = keys.device
        dim_keys = self._keys if self._keys.device == device else self._keys.to(device)
        keys = keys.to(torch.int64) & MASK32
        positions = positions.to(torch.int64) & MASK32
        cell = fmix32(positions ^ fmix32((keys + GOLDEN) & MASK32))  # [n]
        bits = fmix32(dim_keys[:, None, :] ^ cell[None, :, None])  # [2, n, d/2]
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
