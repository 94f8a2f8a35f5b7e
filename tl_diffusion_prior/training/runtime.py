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


def autocast(config: TrainConfig, device: torch.device):
    """bf16 autocast when ``config.autocast`` asks for it ("auto": on GPU only), else a no-op."""
    enabled = config.autocast == "bf16" or (config.autocast == "auto" and device.type == "cuda")
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
