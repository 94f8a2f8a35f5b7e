"""How the trainer draws its randomness and picks its precision.

Every random stream of a run (batch rows, noise, validation rows and noise, the rows a design is
fitted on) has its own generator, seeded by :func:`derive_seed` from the run's seed, the rank and a
stream number, so streams never share state and a checkpoint can restore each one exactly.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from tl_diffusion_prior.training.config import TrainConfig


def derive_seed(*parts: int) -> int:
    """A 63-bit seed derived from ``parts`` (seed, rank, stream) with NumPy's SeedSequence."""
    value = np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)[0]
    return int(value) >> 1


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (AVX512-BF16 or AMX).

    Where it does, a large bf16 matmul runs ~3x faster than float32 (830 against 225-285 GFLOP/s
    for 2048 x 2048 on the 2-core development machine), and bf16 training of the MLP prior doubles
    its samples/s with the same loss curve (``benchmarks/recipes.py``). Elsewhere bf16 is emulated
    and slower than float32.
    """
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    # torch.cpu exposes these probes with a leading underscore; a torch without them gets fp32.
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def uses_bf16(mode: str, device: torch.device) -> bool:
    """Whether autocast ``mode`` ("auto", "bf16", "off") runs bf16 on ``device``.

    "auto" is bf16 on CUDA and on CPUs with hardware bf16 (:func:`cpu_has_fast_bf16`).
    """
    if mode == "auto":
        return device.type == "cuda" or (device.type == "cpu" and cpu_has_fast_bf16())
    return mode == "bf16"


def autocast(config: TrainConfig, device: torch.device):
    """bf16 autocast when ``config.autocast`` asks for it (see :func:`uses_bf16`), else a no-op."""
    if not uses_bf16(config.autocast, device):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
