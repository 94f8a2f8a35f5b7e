"""Shared pieces of the training tests: a tiny prior, synthetic activations, a resumable source."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from tl_diffusion_prior.capture.buffer import ActivationRingBuffer
from tl_diffusion_prior.priors import MLPPrior, MLPPriorConfig
from tl_diffusion_prior.training import TrainConfig

D_MODEL = 8


def tiny_prior(d_model: int = D_MODEL, seed: int = 0) -> MLPPrior:
    """A few-hundred-parameter MLP prior, initialised from ``seed``."""
    torch.manual_seed(seed)
    config = MLPPriorConfig(
        d_model=d_model,
        hook_name="blocks.0.hook_resid_post",
        model_name="tiny-test",
        depth=1,
        d_hidden=16,
        d_mlp=16,
        time_embed_dim=8,
        d_time=8,
        sample_steps=4,
        # Without the Gaussian skip the fresh prior starts far above the reference, so a few
        # steps visibly lower the loss (what the trainer tests check).
        gaussian_skip=False,
    )
    return MLPPrior(config)


def synthetic_activations(n: int, d_model: int = D_MODEL, seed: int = 0) -> Tensor:
    """Non-Gaussian rows (a ring with a per-dim scale and offset), reproducible from ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    angle = torch.rand(n, generator=gen) * 2 * math.pi
    ring = torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
    mix = torch.randn(2, d_model, generator=torch.Generator().manual_seed(1234))
    noise = 0.05 * torch.randn(n, d_model, generator=gen)
    scale = torch.linspace(0.5, 4.0, d_model)
    return (ring @ mix + noise) * scale + torch.arange(d_model, dtype=torch.float32)


def filled_buffer(
    n: int = 512, capacity: int | None = None, d_model: int = D_MODEL, seed: int = 0
) -> ActivationRingBuffer:
    buffer = ActivationRingBuffer(capacity or n, d_model)
    buffer.push(synthetic_activations(n, d_model, seed))
    return buffer


def tiny_config(**overrides: Any) -> TrainConfig:
    fields: dict[str, Any] = dict(
        steps=12,
        batch_size=32,
        lr=1e-2,
        log_every=2,
        eval_every=4,
        val_size=64,
        checkpoint_every=4,
        ema_decay=0.9,
        progress=False,
    )
    fields.update(overrides)
    return TrainConfig(**fields)


class CountingTokenSource:
    """An endless, resumable source of random token batches; batch ``k`` depends only on ``k``."""

    def __init__(self, d_vocab: int = 300, batch_size: int = 2, ctx: int = 8, seed: int = 0):
        self.d_vocab, self.batch_size, self.ctx, self.seed = d_vocab, batch_size, ctx, seed
        self.position = 0

    def __iter__(self):
        while True:
            gen = torch.Generator().manual_seed(self.seed * 100_003 + self.position)
            self.position += 1
            yield torch.randint(self.d_vocab, (self.batch_size, self.ctx), generator=gen)

    def state_dict(self) -> dict[str, Any]:
        return {"position": self.position, "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.position = int(state["position"])
