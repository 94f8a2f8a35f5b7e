"""The Gaussian-optimal denoiser both prior designs add to their network's output ("Gaussian skip").

For data ``N(mean, U diag(lam) U^T)`` the best predictor of the noise (DDPM) or of the velocity
(flow matching) from a noisy vector is linear, with a closed form in the covariance's eigenbasis.
For any data, the best *linear* predictor reaches exactly the Gaussian reference loss. Adding it
to a network whose output layer starts at zero makes a prior start at that reference, so training
only has to learn the non-Gaussian part: dense ``d x d`` correlations are otherwise the first
thing a small network spends its CPU budget on.

The fit is data-dependent (``fit`` on normalised rows, called by the prior's ``fit_data`` before
training) and saved with the weights as float32 buffers. It always runs in float32, outside any
autocast: it carries most of the prediction, and its cost (two ``d x d`` products) is small
beside the network's.
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor

from tl_diffusion_prior.core.moments import covariance
from tl_diffusion_prior.core.normalizer import Float32BuffersMixin


class GaussianFit(Float32BuffersMixin):
    """Mean and eigendecomposed covariance of normalised rows; starts as ``N(0, I)``."""

    mean: Tensor
    eigvecs: Tensor
    eigvals: Tensor

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(d_model))
        self.register_buffer("eigvecs", torch.eye(d_model))
        self.register_buffer("eigvals", torch.ones(d_model))

    @torch.no_grad()
    def fit(self, z: Float[Tensor, "n d_model"]) -> None:
        """Fit the mean and covariance of normalised samples ``z``."""
        mean, cov = covariance(z.detach(), correction=1)
        eigvals, eigvecs = torch.linalg.eigh(cov)
        self.mean.copy_(mean)
        self.eigvecs.copy_(eigvecs)
        self.eigvals.copy_(eigvals.clamp_min(0.0))

    def _apply_gain(
        self, centred: Float[Tensor, "n d_model"], gain: Float[Tensor, "m d_model"]
    ) -> Float[Tensor, "n d_model"]:
        """``U diag(gain) U^T centred`` in float32 (``m`` is 1 or ``n``)."""
        with torch.autocast(device_type=centred.device.type, enabled=False):
            return ((centred.float() @ self.eigvecs) * gain) @ self.eigvecs.T


class GaussianNoisePredictor(GaussianFit):
    """``E[eps | x_t]`` under DDPM noising ``x_t = a x + s eps``, ``a^2 = ab``, ``s^2 = 1 - ab``.

    ``E[eps | x_t] = s U diag(1 / (a^2 lam + s^2)) U^T (x_t - a mean)``; for ``N(0, I)`` it is
    ``s x_t``.
    """

    alphas_cumprod: Tensor

    def __init__(self, d_model: int, alphas_cumprod: Tensor) -> None:
        super().__init__(d_model)
        self.register_buffer("alphas_cumprod", alphas_cumprod.float().clone(), persistent=False)

    def forward(
        self, z_t: Float[Tensor, "n d_model"], timesteps: Int[Tensor, "*n"]
    ) -> Float[Tensor, "n d_model"]:
        ab = self.alphas_cumprod[timesteps].reshape(-1, 1)
        a, s = ab.sqrt(), (1.0 - ab).sqrt()
        gain = s / (ab * self.eigvals + (1.0 - ab))
        return self._apply_gain(z_t.float() - a * self.mean, gain).to(z_t.dtype)


class GaussianVelocityPredictor(GaussianFit):
    """``E[eps - x | z_t]`` under the flow ``z_t = (1 - t) x + t eps``.

    With ``y = z_t - (1 - t) mean``, each eigen-direction of variance ``lam`` has
    ``E[eps - (x - mean) | y] = (t - (1 - t) lam) / ((1 - t)^2 lam + t^2) y``, so the velocity is
    ``U diag(gain) U^T y - mean``.
    """

    def forward(
        self, z_t: Float[Tensor, "n d_model"], t: Float[Tensor, " m"]
    ) -> Float[Tensor, "n d_model"]:
        t = t.float().reshape(-1, 1)
        gain = (t - (1 - t) * self.eigvals) / ((1 - t) ** 2 * self.eigvals + t**2)
        velocity = self._apply_gain(z_t.float() - (1 - t) * self.mean, gain) - self.mean
        return velocity.to(z_t.dtype)
