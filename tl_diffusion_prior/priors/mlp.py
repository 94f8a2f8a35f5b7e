"""The paper's MLP flow-matching prior (GLP): a gated residual MLP over single activation vectors.

Architecture (Luo et al., 2026): input projection ``d_model -> d_hidden``; ``depth`` pre-LayerNorm
residual blocks ``h + down(SiLU(gate(LN h) * time_proj_i(temb)) * up(LN h))``; final LayerNorm;
output projection back to ``d_model``. ``temb`` is a sinusoidal embedding of ``1000 t`` followed
by Linear-SiLU-Linear; each block has its own projection of it, which scales the gate's
pre-activation. ``gate`` and ``up`` are stored as one fused Linear (``gate_up``): the same maths as
two layers, one matmul instead of two.

With ``gaussian_skip`` (the default) the velocity is ``v_lin(z_t, t) + network(z_t, t)``, where
``v_lin`` is the Gaussian-optimal velocity for the mean and covariance fitted by
:meth:`MLPPrior.fit_data` (:mod:`tl_diffusion_prior.priors.gaussian_skip`). The output layer starts
at zero, so a fresh prior already sits at its Gaussian reference loss and training spends its
budget on the non-Gaussian part.

Objective: rectified flow. ``z_t = (1 - t) x + t eps`` with ``t ~ U(0, 1)``; the network predicts
the velocity ``eps - x`` under plain MSE. Sampling and denoising integrate ``dz/dt = v`` with Euler
steps towards ``t = 0``; one step from ``t`` gives ``z_t - t v = E[x | z_t]`` for the optimal ``v``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from tl_diffusion_prior.core.validation import check_positive_int
from tl_diffusion_prior.priors.base import (
    DiffusionPrior,
    PriorConfig,
    check_cov_eigenvalues,
    register_prior,
)
from tl_diffusion_prior.priors.gaussian_skip import GaussianVelocityPredictor

# Sinusoidal embeddings are tuned for integer-like timesteps; scaling t in [0, 1] by 1000 spreads
# its frequencies the way diffusers' flow-matching scheduler does.
_TIME_SCALE = 1000.0


@dataclass(kw_only=True)
class MLPPriorConfig(PriorConfig):
    """Config of :class:`MLPPrior`. ``None`` sizes are resolved from ``d_model``.

    The defaults are the CPU-scale configuration measured on SmolLM2-135M (d_model 576: width 1152,
    hidden 1152, depth 3, 14.3M parameters, ~2,000 training samples/s on a CPU). The paper's GLP
    uses ``d_hidden = 2 * d_model``, ``d_mlp = 4 * d_model`` and depth 3, 6, 12 or 24.

    Attributes:
        depth: Number of gated residual blocks.
        d_hidden: Width of the residual stream of the network; default ``2 * d_model``.
        d_mlp: Hidden size of each block's gated MLP; default ``2 * d_model`` (paper:
            ``4 * d_model``).
        time_embed_dim: Size of the sinusoidal timestep embedding (even).
        d_time: Width of the Linear-SiLU-Linear timestep MLP; default ``time_embed_dim``.
        sample_steps: Euler steps :meth:`MLPPrior.sample` takes by default (paper: 20 moderate,
            100 good, 1000 best).
        gaussian_skip: add the Gaussian-optimal velocity (fitted by :meth:`MLPPrior.fit_data`)
            to the network's output, so training starts at the Gaussian reference. Priors saved
            before this field existed load with it off.
    """

    expected_architecture: ClassVar[str | None] = "mlp"
    absent_key_defaults: ClassVar[dict[str, Any]] = {"gaussian_skip": False}

    architecture: str = "mlp"
    depth: int = 3
    d_hidden: int | None = None
    d_mlp: int | None = None
    time_embed_dim: int = 256
    d_time: int | None = None
    sample_steps: int = 100
    gaussian_skip: bool = True

    @classmethod
    def paper(cls, d_model: int, depth: int = 3, **fields: Any) -> MLPPriorConfig:
        """The paper's GLP sizes: ``d_hidden = 2 d_model``, ``d_mlp = 4 d_model``, ``depth``."""
        return cls(d_model=d_model, depth=depth, d_mlp=4 * d_model, **fields)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.d_hidden is None:
            self.d_hidden = 2 * self.d_model
        if self.d_mlp is None:
            self.d_mlp = 2 * self.d_model
        if self.d_time is None:
            self.d_time = self.time_embed_dim
        for name in ("depth", "d_hidden", "d_mlp", "time_embed_dim", "d_time", "sample_steps"):
            check_positive_int(name, getattr(self, name))
        if self.time_embed_dim % 2:
            raise ValueError(
                f"time_embed_dim must be even (cos and sin halves), got {self.time_embed_dim}."
            )


def sinusoidal_embedding(t: Float[Tensor, " n"], dim: int) -> Float[Tensor, "n dim"]:
    """``[cos(1000 t f_k), sin(1000 t f_k)]`` with frequencies ``f_k = 10000^(-k / (dim/2))``."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half
    )
    args = (t.float() * _TIME_SCALE)[:, None] * freqs[None, :]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class GatedBlock(nn.Module):
    """``h + down(SiLU(gate(LN h) * time_mod) * up(LN h))`` with a fused gate/up projection."""

    def __init__(self, d_hidden: int, d_mlp: int, d_time: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_hidden)
        self.gate_up = nn.Linear(d_hidden, 2 * d_mlp)
        self.time_proj = nn.Linear(d_time, d_mlp)
        self.down = nn.Linear(d_mlp, d_hidden)

    def forward(
        self, h: Float[Tensor, "n d_hidden"], time_mod: Float[Tensor, "m d_mlp"]
    ) -> Float[Tensor, "n d_hidden"]:
        gate, up = self.gate_up(self.norm(h)).chunk(2, dim=-1)
        return h + self.down(F.silu(gate * time_mod) * up)


class FlowMLP(nn.Module):
    """The velocity network ``v(z_t, t)``; ``forward`` takes precomputed time modulations.

    Splitting :meth:`time_modulation` from :meth:`forward` lets a sampler compute every step's
    modulation in one batched call instead of re-running the timestep MLP at every Euler step.
    """

    def __init__(self, config: MLPPriorConfig) -> None:
        super().__init__()
        d, dh, dm, dt = config.d_model, config.d_hidden, config.d_mlp, config.d_time
        self.time_embed_dim = config.time_embed_dim
        self.time_mlp = nn.Sequential(
            nn.Linear(config.time_embed_dim, dt), nn.SiLU(), nn.Linear(dt, dt)
        )
        self.in_proj = nn.Linear(d, dh)
        self.blocks = nn.ModuleList(GatedBlock(dh, dm, dt) for _ in range(config.depth))
        self.final_norm = nn.LayerNorm(dh)
        self.out_proj = nn.Linear(dh, d)
        # Zero-init every write into the residual stream and the output: each block starts as the
        # identity, so depth does not change the scale of h at init, and the initial velocity is 0,
        # so the first loss is E|eps - x|^2 instead of that plus a random network's output power.
        for layer in [*(b.down for b in self.blocks), self.out_proj]:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.gaussian = GaussianVelocityPredictor(d) if config.gaussian_skip else None

    def time_modulation(self, t: Float[Tensor, " m"]) -> Float[Tensor, "depth m d_mlp"]:
        """Every block's gate scale for the noise levels ``t``, stacked over blocks."""
        dtype = self.in_proj.weight.dtype
        temb = self.time_mlp(sinusoidal_embedding(t, self.time_embed_dim).to(dtype))
        return torch.stack([block.time_proj(temb) for block in self.blocks])

    def forward(
        self,
        z: Float[Tensor, "n d_model"],
        time_mod: Float[Tensor, "depth m d_mlp"],
        t: Float[Tensor, " m"],
    ) -> Float[Tensor, "n d_model"]:
        """Velocity at ``z``; ``time_mod`` from :meth:`time_modulation` of the same ``t``
        (``m`` is 1 or ``n``)."""
        h = self.in_proj(z)
        for block, mod in zip(self.blocks, time_mod, strict=True):
            h = block(h, mod)
        v = self.out_proj(self.final_norm(h))
        if self.gaussian is not None:
            v = v + self.gaussian(z, t)
        return v

    def velocity(
        self, z: Float[Tensor, "n d_model"], t: Float[Tensor, " m"]
    ) -> Float[Tensor, "n d_model"]:
        return self(z, self.time_modulation(t), t)


@register_prior("mlp")
class MLPPrior(DiffusionPrior):
    """The paper's GLP: a gated residual MLP trained by rectified flow, sampled with Euler steps.

    Args:
        config: An :class:`MLPPriorConfig`.
    """

    config_class = MLPPriorConfig
    config: MLPPriorConfig

    def __init__(self, config: MLPPriorConfig) -> None:
        super().__init__(config)
        self.network = FlowMLP(config)

    @property
    def default_sample_steps(self) -> int:
        return self.config.sample_steps

    def _loss_normalized(
        self,
        z: Float[Tensor, "batch d_model"],
        generator: torch.Generator | None,
        levels: Float[Tensor, " batch"] | None = None,
    ) -> Float[Tensor, ""]:
        batch = z.shape[0]
        if levels is None:
            t = torch.rand(batch, 1, generator=generator, device=z.device, dtype=torch.float32)
        else:
            t = levels.reshape(batch, 1)  # t ~ U[0, 1): the quantile is the level
        eps = torch.randn(z.shape, generator=generator, device=z.device, dtype=torch.float32)
        x = z.float()
        z_t = ((1.0 - t) * x + t * eps).to(z.dtype)
        v = self.network.velocity(z_t, t.squeeze(1))
        return (v.float() - (eps - x)).square().mean()

    @torch.no_grad()
    def fit_data(self, x: Float[Tensor, "n d_model"]) -> None:
        """Fit the Gaussian skip's mean and covariance from RAW activations ``x`` (when
        ``gaussian_skip``); call after :meth:`set_normalization` and before training."""
        if self.network.gaussian is not None:
            self.network.gaussian.fit(self._normalized_rows(x))

    def add_noise(
        self, z: Float[Tensor, "n d_model"], noise: Float[Tensor, "n d_model"], t: float
    ) -> Float[Tensor, "n d_model"]:
        return torch.lerp(z, noise.to(z.dtype), t)

    def posterior_mean(
        self, z_t: Float[Tensor, "n d_model"], t: float
    ) -> Float[Tensor, "n d_model"]:
        return self._integrate(z_t, float(t), 1)

    def _denoise_normalized(
        self,
        z: Float[Tensor, "n d_model"],
        t_start: float,
        num_steps: int,
        noise: Float[Tensor, "n d_model"],
    ) -> Float[Tensor, "n d_model"]:
        return self._integrate(self.add_noise(z, noise, t_start), t_start, num_steps)

    def _sample_normalized(
        self, noise: Float[Tensor, "n d_model"], num_steps: int
    ) -> Float[Tensor, "n d_model"]:
        return self._integrate(noise, 1.0, num_steps)

    def _integrate(self, z_t: Tensor, t_start: float, num_steps: int) -> Tensor:
        """``num_steps`` uniform Euler steps from ``t_start`` to 0; one network call per step.

        Built for per-token steering: every step's time modulation comes from one batched call
        made on the device before the loop (no host-to-device copy, so no stream sync), the step
        size is a python float, and the state is updated in place. The state is kept in at least
        float32 so a bf16 network does not round the trajectory at every step.
        """
        dtype = self.dtype
        state = z_t.to(torch.promote_types(dtype, torch.float32), copy=True)
        dt = -t_start / num_steps
        steps = torch.arange(num_steps, device=z_t.device, dtype=torch.float32)
        t_now = steps.mul_(dt).add_(t_start)
        # [steps, depth, 1, d_mlp]: one contiguous modulation per step, broadcast over tokens.
        mods = self.network.time_modulation(t_now).transpose(0, 1).unsqueeze(2).contiguous()
        for k in range(num_steps):
            state.add_(self.network(state.to(dtype), mods[k], t_now[k : k + 1]), alpha=dt)
        return state.to(dtype)

    def gaussian_reference_loss(
        self,
        cov_eigenvalues: Float[Tensor, " d"],
        data_second_moments: Float[Tensor, " d"] | None = None,
    ) -> float:
        """Closed form ``mean_i (pi / 2) sqrt(lam_i)``, or its generalisation to other data.

        For ``x ~ N(0, lam)`` per eigen-direction, the MMSE of ``eps - x`` given
        ``z_t = (1 - t) x + t eps`` is ``lam / ((1 - t)^2 lam + t^2)``, and its integral over
        ``t in [0, 1]`` is ``sqrt(lam) (atan(1 / sqrt(lam)) + atan(sqrt(lam)))``, which is
        ``(pi / 2) sqrt(lam)``.
        The loss averages over dims, so this averages over the ``d_model`` eigenvalues.

        With ``data_second_moments`` ``m_i``, the same linear predictor (built for variances
        ``lam_i``) is scored on data whose second moment along eigenvector ``i`` is ``m_i``:
        ``E(v - a z)^2 = 1 + m - 2 a (t - (1 - t) m) + a^2 ((1 - t)^2 m + t^2)`` with
        ``a = (t - (1 - t) lam) / ((1 - t)^2 lam + t^2)``, integrated over ``t`` numerically.
        """
        lam = check_cov_eigenvalues(cov_eigenvalues, self.config.d_model)
        if data_second_moments is None:
            return float((math.pi / 2) * lam.sqrt().mean())
        m = check_cov_eigenvalues(data_second_moments, self.config.d_model, "data_second_moments")
        t, weights = _unit_interval_quadrature()
        t, lam, m = t[:, None], lam[None, :], m[None, :]
        gain = (t - (1 - t) * lam) / ((1 - t) ** 2 * lam + t**2)
        mse = 1 + m - 2 * gain * (t - (1 - t) * m) + gain**2 * ((1 - t) ** 2 * m + t**2)
        return float((weights[:, None] * mse).sum(0).mean())


def _unit_interval_quadrature(
    nodes_per_panel: int = 48,
) -> tuple[Float[Tensor, " n"], Float[Tensor, " n"]]:
    """Gauss-Legendre nodes and weights on [0, 1], on panels [0, 1e-9], [1e-9, 1e-8], ..., [0.1, 1].

    The flow loss of a direction with variance ``lam`` changes on the scale ``t ~ sqrt(lam)``, so
    geometric panels resolve it for every eigenvalue down to ~1e-16.
    """
    x, w = np.polynomial.legendre.leggauss(nodes_per_panel)
    edges = [0.0] + [10.0**k for k in range(-9, 1)]
    ts, ws = [], []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        ts.append((hi - lo) / 2 * x + (hi + lo) / 2)
        ws.append((hi - lo) / 2 * w)
    return torch.from_numpy(np.concatenate(ts)), torch.from_numpy(np.concatenate(ws))
