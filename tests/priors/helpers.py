"""Shared test helpers for the priors: tiny prior factories and a synthetic curved manifold.

``TINY_CONFIGS`` holds, per registered architecture, config overrides that make a prior small
enough for the contract tests; ``tests/priors/test_contract.py`` fails for any registered
architecture missing here.
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch import Tensor

from tl_diffusion_prior.priors import PRIOR_REGISTRY, DiffusionPrior

TINY_D_MODEL = 24

# Per-architecture overrides for tiny priors (d_model, hook_name and model_name are filled in).
TINY_CONFIGS: dict[str, dict] = {
    "mlp": dict(depth=2, d_hidden=32, d_mlp=48, time_embed_dim=16, d_time=16, sample_steps=8),
    "glp": dict(depth=2, d_hidden=32, d_mlp=48, layers=(0,), sample_steps=8),
    "unet": dict(
        unet=dict(
            block_out_channels=[8, 16],
            layers_per_block=1,
            down_block_types=["DownBlock2D", "AttnDownBlock2D"],
            up_block_types=["AttnUpBlock2D", "UpBlock2D"],
            norm_num_groups=4,
            attention_head_dim=8,
        ),
        position_channels=2,
        sample_steps=8,
    ),
}


def build_tiny_prior(architecture: str, d_model: int = TINY_D_MODEL, **overrides) -> DiffusionPrior:
    """A tiny prior of ``architecture`` in float32 on CPU, with its default initialisation."""
    prior_cls = PRIOR_REGISTRY[architecture]
    kwargs = dict(d_model=d_model, hook_name="blocks.0.hook_resid_post", model_name="tiny-test")
    kwargs.update(TINY_CONFIGS[architecture])
    kwargs.update(overrides)
    return prior_cls(prior_cls.config_class(**kwargs))


def randomize_(prior: DiffusionPrior, seed: int = 0, scale: float = 0.2) -> DiffusionPrior:
    """Perturb every parameter and set non-trivial normaliser stats, in place.

    Zero-initialised output layers make a fresh prior's network output constant, which would let
    round-trip and determinism checks pass vacuously.
    """
    gen = torch.Generator().manual_seed(seed)
    d = prior.config.d_model
    with torch.no_grad():
        for p in prior.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen, dtype=torch.float32).to(p.dtype))
        mean = torch.randn(d, generator=gen, dtype=torch.float64)
        var = torch.rand(d, generator=gen, dtype=torch.float64) * 3 + 0.25
        prior.set_normalization(mean, var)
    return prior


class SyntheticManifold:
    """A torus-like 2-D manifold embedded nonlinearly in ``d`` dims.

    Two angles ``(a, b)`` map to Fourier features ``cos/sin(j a + k b)`` for a few low frequency
    pairs, which a fixed random matrix mixes into ``d`` dims, then a per-dim scale and offset are
    applied (so the normaliser has work to do). The image is a smooth closed surface that no
    Gaussian describes well.
    """

    FREQUENCIES = ((1, 0), (0, 1), (1, 1), (1, -1), (2, 0), (0, 2))

    def __init__(self, d: int = 16, seed: int = 0, grid: int = 160) -> None:
        gen = torch.Generator().manual_seed(seed)
        n_feat = 2 * len(self.FREQUENCIES)
        self.d = d
        self.mix = torch.randn(n_feat, d, generator=gen) / math.sqrt(n_feat / 2)
        self.scale = torch.exp(torch.randn(d, generator=gen) * 0.5)
        self.offset = torch.randn(d, generator=gen) * 2
        angles = torch.arange(grid) * (2 * math.pi / grid)
        a, b = torch.meshgrid(angles, angles, indexing="ij")
        self.reference = self.embed(a.reshape(-1), b.reshape(-1))

    def embed(self, a: Tensor, b: Tensor) -> Tensor:
        freqs = torch.tensor(self.FREQUENCIES, dtype=torch.float32)
        phase = a[:, None] * freqs[:, 0] + b[:, None] * freqs[:, 1]
        feats = torch.cat([torch.cos(phase), torch.sin(phase)], dim=-1)
        return (feats @ self.mix) * self.scale + self.offset

    def sample(
        self, n: int, generator: torch.Generator | None = None, noise_std: float = 0.01
    ) -> Tensor:
        """``n`` points on the manifold plus isotropic Gaussian noise of ``noise_std``."""
        a, b = torch.rand(2, n, generator=generator) * (2 * math.pi)
        x = self.embed(a, b)
        return x + noise_std * torch.randn(x.shape, generator=generator)

    def distance_to_manifold(self, points: Tensor, chunk: int = 512) -> Tensor:
        """Distance from each point to its nearest neighbour in a dense sample of the manifold."""
        points = points.detach().to("cpu", torch.float32).reshape(-1, self.d)
        out = [torch.cdist(part, self.reference).min(dim=1).values for part in points.split(chunk)]
        return torch.cat(out)

    def gaussian_fit_samples(
        self, data: Tensor, n: int, generator: torch.Generator | None = None
    ) -> Tensor:
        """``n`` draws from the Gaussian with ``data``'s mean and covariance."""
        data64 = data.double()
        mean = data64.mean(0)
        cov = torch.cov(data64.T) + 1e-9 * torch.eye(self.d, dtype=torch.float64)
        chol = torch.linalg.cholesky(cov)
        eps = torch.randn(n, self.d, generator=generator, dtype=torch.float64)
        return (mean + eps @ chol.T).float()


@contextlib.contextmanager
def single_thread():
    # Two cores shared by several processes: intra-op threads spin-wait on each other and make
    # tiny matmuls ~10x slower, so training fixtures run on one thread.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_on_manifold(model_name: str = "tiny-test", steps: int = 1200):
    """A small MLP prior fitted for a few seconds to a torus embedded in 16 dims.

    Returns ``(prior in eval mode, manifold, training data)``; the same seeds give the same prior.
    """
    from tl_diffusion_prior.priors import MLPPrior, MLPPriorConfig

    manifold = SyntheticManifold(d=16, seed=0)
    gen = torch.Generator().manual_seed(0)
    data = manifold.sample(20_000, gen)
    torch.manual_seed(0)
    config = MLPPriorConfig(
        d_model=16,
        hook_name="blocks.0.hook_resid_post",
        model_name=model_name,
        depth=2,
        d_hidden=64,
        d_mlp=128,
        time_embed_dim=32,
        d_time=32,
    )
    prior = MLPPrior(config)
    prior.set_normalization(data.double().mean(0), data.double().var(0, unbiased=False))
    warmup = 50
    optimizer = torch.optim.AdamW(prior.parameters(), lr=1e-2, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: min(1.0, (s + 1) / warmup) * (0.55 + 0.45 * math.cos(math.pi * s / steps)),
    )
    with single_thread():
        for _ in range(steps):
            batch = data[torch.randint(0, len(data), (128,), generator=gen)]
            loss = prior.loss(batch, generator=gen)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(prior.parameters(), 1.0)
            optimizer.step()
            schedule.step()
    return prior.eval(), manifold, data
