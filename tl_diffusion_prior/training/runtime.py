"""How the trainer draws its randomness and picks its precision.

Every random stream of a run (batch rows, noise, validation rows and noise, the rows a design is
fitted on) has its own generator, seeded by :func:`derive_seed` from the run's seed, the rank and a
stream number, so streams never share state and a checkpoint can restore each one exactly.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from tl_diffusion_prior.core.precision import has_fast_bf16
from tl_diffusion_prior.training.config import TrainConfig


def derive_seed(*parts: int) -> int:
    """A 63-bit seed derived from ``parts`` (seed, rank, stream) with NumPy's SeedSequence."""
    value = np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)[0]
    return int(value) >> 1


def uses_bf16(mode: str, device: torch.device) -> bool:
    """Whether autocast ``mode`` ("auto", "bf16", "off") runs bf16 on ``device``.

    "auto" is bf16 where the device computes it natively (:func:`~tl_diffusion_prior.core.
    precision.has_fast_bf16`: CUDA from Ampere on, CPUs with AVX512-BF16 or AMX). There bf16
    training of the MLP prior doubles its samples/s with the same loss curve
    (``benchmarks/recipes.py``).
    """
    if mode == "auto":
        return has_fast_bf16(device)
    return mode == "bf16"


def autocast(config: TrainConfig, device: torch.device):
    """bf16 autocast when ``config.autocast`` asks for it (see :func:`uses_bf16`), else a no-op."""
    if not uses_bf16(config.autocast, device):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
