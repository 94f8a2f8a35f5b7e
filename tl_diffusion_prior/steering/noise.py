"""Counter-based Gaussian noise: a pure function of (seed, batch row, absolute position, dim).

On-manifold steering noises every steered activation before denoising it. Drawing that noise from a
stateful generator would make it depend on call order: generation without the KV cache recomputes
every earlier position at every step, and would re-noise them differently each time, so cached and
non-cached generation would disagree. Here each value is a hash of its coordinates instead, computed
for all steered positions at once with a few vectorised integer ops (no per-token Python loop and no
generator state).

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

_MASK32 = 0xFFFFFFFF
_GOLDEN = 0x9E3779B9
#: Distinct constants so the two uniforms of a Box-Muller pair come from independent streams.
_STREAMS = (0x68E31DA4, 0xB5297A4D)
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


class PositionNoise:
    """Standard-normal noise of width ``d_model`` determined by (seed, row, absolute position).

    Args:
        seed: Any int in [0, 2**63).
        d_model: Width of each noise vector.
        device: Where the per-dimension keys live (and where the noise is made).

    The per-dimension keys depend only on the seed and are computed once here, so each call hashes
    just ``n`` row/position keys and two ``[n, d_model / 2]`` grids.
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
        self, rows: Int[Tensor, " n"], positions: Int[Tensor, " n"]
    ) -> Float[Tensor, "n d_model"]:
        """Noise for each (row, position) pair, float32 on ``rows``' device."""
        if rows.shape != positions.shape or rows.ndim != 1:
            raise ValueError(
                f"rows and positions must be 1-D and equally long, got {tuple(rows.shape)} and "
                f"{tuple(positions.shape)}."
            )
        device = rows.device
        keys = self._keys if self._keys.device == device else self._keys.to(device)
        rows = rows.to(torch.int64) & _MASK32
        positions = positions.to(torch.int64) & _MASK32
        cell = _fmix32(positions ^ _fmix32((rows + _GOLDEN) & _MASK32))  # [n]
        bits = _fmix32(keys[:, None, :] ^ cell[None, :, None])  # [2, n, d/2]
        # The top 24 bits, offset by half a step, give uniforms strictly inside (0, 1) that float32
        # represents exactly, so log() never sees 0.
        uniform = ((bits >> 8).to(torch.float32) + 0.5) * (1.0 / (1 << 24))
        radius = torch.sqrt(-2.0 * torch.log(uniform[0]))
        angle = (2.0 * math.pi) * uniform[1]
        noise = torch.cat([radius * torch.cos(angle), radius * torch.sin(angle)], dim=-1)
        return noise[:, : self.d_model]


def position_noise(
    seed: int,
    rows: Int[Tensor, " n"],
    positions: Int[Tensor, " n"],
    d_model: int,
) -> Float[Tensor, "n d_model"]:
    """One-off form of :class:`PositionNoise` (rebuilds the per-dimension keys every call)."""
    return PositionNoise(seed, d_model, rows.device)(rows, positions)
