"""The probability-flow ODE negative log-likelihood of a flow-matching prior (``method="ode"``).

A rectified-flow prior's velocity ``v(z, t)`` carries data ``z_0`` to ``z_1 ~ N(0, I)`` along
``dz/dt = v``; the instantaneous change of variables gives

    log p_0(z_0) = log N(z_1; 0, I) + \\int_0^1 div v(z_t, t) dt,

and ``div v = E[e^T (dv/dz) e]`` for a random probe ``e`` with ``E[e e^T] = I`` (Hutchinson's
estimator; the score passes a Rademacher ``+-1`` probe, whose estimate varies less than a Gaussian
one's): one vector-Jacobian product per step instead of ``d_model`` of them. The score is
``-log p_0(z_0) / d_model``, nats per dimension of the prior's normalised space (the normaliser's
log-determinant, a constant, is left out), so larger means less likely, as for the default.

**Cost per vector:** ``steps`` Euler steps, each one forward and one backward pass of the network
(about 3 ``steps`` evaluations' worth: ~100 for the default 32 steps, against 3 for ``"elbo"``).
**Noise and bias:** the probe is fixed per vector by the seed; Euler steps bias the integral. On
a Gaussian in 8 dimensions, where the exact likelihood is known, 32 steps come within about 1% of
it on average (1.332 against 1.347 nats per dimension; per vector the correlation is 0.87: one
probe in few dimensions is noisy).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from jaxtyping import Float
from torch import Tensor


def ode_nll(
    velocity: Callable[[Tensor, Tensor], Tensor],
    z: Float[Tensor, "n d_model"],
    probe: Float[Tensor, "n d_model"],
    steps: int,
    dtype: torch.dtype,
) -> Float[Tensor, " n"]:
    """``-log p(z) / d_model`` for normalised ``z`` under the flow ``velocity(z_t, t)``.

    Args:
        velocity: The network's velocity, called with ``[n, d_model]`` states in ``dtype`` and a
            ``[1]`` float32 time.
        z: Clean normalised vectors.
        probe: One Hutchinson probe per vector (``E[e e^T] = I``: Rademacher or standard normal).
        steps: Euler steps from ``t = 0`` to ``t = 1``.
        dtype: The network's dtype; the state and the integral are kept in float32.
    """
    n, d_model = z.shape
    dt = 1.0 / steps
    # The monitor may run inside inference mode (generate, or a caller's own): the vector-Jacobian
    # products need autograd, on ordinary tensors cloned from the inputs.
    with torch.inference_mode(False), torch.enable_grad():
        state = z.float().clone()
        probe = probe.to(state.device, torch.float32).clone()
        divergence = torch.zeros(n, device=state.device, dtype=torch.float32)
        for k in range(steps):
            t = torch.full((1,), k * dt, device=state.device, dtype=torch.float32)
            x = state.detach().requires_grad_(True)
            v = velocity(x.to(dtype), t).float()
            (vjp,) = torch.autograd.grad(v, x, grad_outputs=probe)
            divergence += dt * (vjp * probe).sum(dim=-1)
            state = state + dt * v.detach()
        log_p1 = -0.5 * state.square().sum(dim=-1) - 0.5 * d_model * math.log(2 * math.pi)
        return (-(log_p1 + divergence) / d_model).detach()
