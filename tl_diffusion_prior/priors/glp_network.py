"""The network and Euler schedule of the paper's released GLP checkpoints.

The released denoiser (``TransformerMLPDenoiser`` in the paper's ``glp/denoiser.py``) is the same
gated residual MLP as :class:`~tl_diffusion_prior.priors.mlp.FlowMLP` once its sizes are set the
way the release sets them: the sinusoidal timestep embedding and the Linear-SiLU-Linear timestep
MLP are both ``d_hidden`` wide (their ``d_model``), and there is no Gaussian skip. Two things are
not in ``FlowMLP`` and live here:

* the multi-layer checkpoints add ``layer_embed(sinusoid(L / (n_positions - 1)))`` to the time
  embedding before the blocks' ``time_proj``; that sinusoid takes the layer depth in [0, 1]
  directly (no factor of 1000, unlike the timestep);
* sampling follows diffusers' ``FlowMatchEulerDiscreteScheduler`` (1000 training steps, shift 1),
  which the release uses: ``N`` evaluation points evenly spaced from the start level down to
  ``sigma_min = 1/1000`` (not to 0), then a final step from ``sigma_min`` to 0. The network reads
  the timestep ``1000 * sigma`` computed in float32, as the scheduler's ``timesteps`` are.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor, nn

from tl_diffusion_prior.priors.mlp import FlowMLP, MLPPriorConfig, sinusoidal_embedding


def depth_embedding(values: Float[Tensor, " n"], dim: int) -> Float[Tensor, "n dim"]:
    """``[cos(v f_k), sin(v f_k)]``, ``f_k = 10000^(-k / (dim/2))``, of values in [0, 1].

    The same frequencies as the timestep embedding, without its factor of 1000: the release feeds
    the layer depth ``L / (n_positions - 1)`` to the sinusoid as it is.
    """
    half = dim // 2
    freqs = torch.exp(
        -math.log(10000.0) * torch.arange(half, device=values.device, dtype=torch.float32) / half
    )
    args = values.float()[:, None] * freqs[None, :]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class GLPNetwork(FlowMLP):
    """:class:`FlowMLP` plus the release's optional layer embedding (multi-layer checkpoints).

    Args:
        config: The MLP sizes; :meth:`GLPPriorConfig.network_config
            <tl_diffusion_prior.priors.glp.GLPPriorConfig.network_config>` builds them.
        layer_positions: The release's ``multi_layer_n_layers``; None for a single-layer network
            (no ``layer_embed``).
    """

    def __init__(self, config: MLPPriorConfig, layer_positions: int | None = None) -> None:
        super().__init__(config)
        self.layer_embed: nn.Sequential | None = None
        if layer_positions is not None:
            d = config.d_hidden
            self.layer_embed = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))

    def time_modulation(
        self,
        t: Float[Tensor, " m"],
        layer_depth: Float[Tensor, " 1"] | Float[Tensor, " m"] | None = None,
    ) -> Float[Tensor, "depth m d_mlp"]:
        """Every block's gate scale for noise levels ``t`` (and, multi-layer, one layer depth, or
        one per level when training rows of several layers in one batch)."""
        dtype = self.in_proj.weight.dtype
        temb = self.time_mlp(sinusoidal_embedding(t, self.time_embed_dim).to(dtype))
        if self.layer_embed is not None:
            if layer_depth is None:
                raise ValueError(
                    "This network is conditioned on a layer; pass layer_depth (the GLPPrior does "
                    "this for the layer picked with at_layer)."
                )
            temb = temb + self.layer_embed(
                depth_embedding(layer_depth, self.time_embed_dim).to(dtype)
            )
        return torch.stack([block.time_proj(temb) for block in self.blocks])


def sigma_min(num_train_timesteps: int) -> float:
    """The scheduler's smallest level, ``1 / num_train_timesteps`` rounded to float32 (diffusers
    computes its training sigmas in float32 and reads the last one back)."""
    return float(np.float32(1.0) / np.float32(num_train_timesteps))


def euler_sigmas(
    t_start: float, num_steps: int, num_train_timesteps: int = 1000
) -> Float[Tensor, " steps_plus_one"]:
    """The noise levels of an Euler integration from ``t_start``: ``num_steps`` evaluation points
    then 0, in float32.

    Evaluation points are ``linspace(1000 t_start, 1000 sigma_min, num_steps) / 1000`` computed
    in float64 (numpy), as diffusers' ``set_timesteps`` does; with ``t_start = 1`` this is exactly
    that scheduler's ``sigmas`` for ``num_steps`` inference steps, and with ``t_start`` one of them
    it is the tail of that schedule (what the release's on-manifold steering runs).
    """
    n = num_train_timesteps
    end = min(sigma_min(n), t_start)  # a start below sigma_min stays put until the last step
    points = np.linspace(t_start * n, end * n, num_steps) / n
    return torch.cat([torch.from_numpy(points).to(torch.float32), torch.zeros(1)])


def training_sigmas(num_train_timesteps: int = 1000) -> Float[Tensor, " n"]:
    """The grid training draws its levels from: the scheduler's ``num_train_timesteps`` levels
    from 1 down to ``sigma_min`` (a level ``u`` in [0, 1) picks index ``floor(u * n)``)."""
    return euler_sigmas(1.0, num_train_timesteps, num_train_timesteps)[:-1]


def paper_steering_schedule(
    u: float = 0.5, num_timesteps: int = 20, num_train_timesteps: int = 1000
) -> tuple[float, int]:
    """``(t_start, num_steps)`` that reproduce the release's on-manifold post-processing.

    Its steering code sets a ``num_timesteps``-step schedule, noises to the level at index
    ``floor(u * num_timesteps)`` of it and runs the schedule from there: with the defaults
    ``u = 0.5`` and 20 steps that is ``sigma = 0.47421...`` and 10 network evaluations (the paper's
    text says "noise to 0.5, 20 steps"). Pass the result as ``t_start``/``num_steps`` to
    :meth:`~tl_diffusion_prior.priors.base.DiffusionPrior.denoise` or to a
    :class:`~tl_diffusion_prior.steering.config.SteeringConfig`.
    """
    if not 0.0 <= u < 1.0:
        raise ValueError(f"u must be in [0, 1) (the release's u = 1 - t), got {u!r}.")
    if isinstance(num_timesteps, bool) or not isinstance(num_timesteps, int) or num_timesteps < 1:
        raise ValueError(f"num_timesteps must be an int >= 1, got {num_timesteps!r}.")
    n = num_train_timesteps
    points = np.linspace(n, sigma_min(n) * n, num_timesteps) / n
    # The release indexes with (float32 u * len(schedule)).long(): a truncation in float32.
    start = int(np.float32(u) * np.float32(num_timesteps))
    return float(points[start]), num_timesteps - start
