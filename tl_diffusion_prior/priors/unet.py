"""The UNet prior: a ``diffusers.UNet2DModel`` over activation vectors laid out as 1-channel images.

One normalised activation vector becomes a ``1 x height x width`` image (see
:mod:`tl_diffusion_prior.priors.grid` for the grid shape, padding and layout). The network is
trained as in DDPM: draw an integer ``timestep`` uniformly, ``x_t = sqrt(ab) x + sqrt(1 - ab) eps``
with ``DDPMScheduler.add_noise``, predict ``eps``, mean squared error over the real cells. Padding
cells hold 0 in the input at every noise level (never noise) and what the UNet writes there is
dropped before the loss, so they are outside both the loss and the Gaussian reference.

Sampling and denoising run deterministic DDIM steps written as tensor maths on a copy of the
schedule, so the training scheduler is never stepped or re-timed (schedulers are stateful).

Noise levels: a flow-matching level ``t`` (0 clean, 1 noise) maps to the DDPM timestep whose
``ab / (1 - ab)`` is closest to ``((1 - t) / t) ** 2``, so ``t_start=0.5`` corrupts as much as it
does for the MLP prior.

Options beyond the write-up's plain UNet, each off in the ``"writeup"`` preset:

* ``gaussian_skip``: the network predicts ``eps_lin(x_t, ab) + UNet(...)``, where ``eps_lin`` is the
  optimal *linear* noise predictor for data with the mean and covariance fitted by
  :meth:`UNetPrior.fit_data` (a closed form in the covariance's eigenbasis). For any data, the best
  linear predictor reaches exactly the Gaussian reference loss, so with the UNet's output layer
  zero-initialised the prior starts at that reference and the convolutions only have to learn the
  non-Gaussian residual. A small CPU-trained UNet otherwise struggles to even match it: dense
  d x d correlations are far from what 3x3 convolutions express.
* ``position_channels`` / ``coord_channels``: learned per-cell input channels or fixed row/column
  coordinates, so the convolutions know which dimension they see (dimensions have no translation
  symmetry).
* ``layout="spectral"``: correlated dimensions placed next to each other (fitted by ``fit_data``).
* ``patch_size``: square patches of the grid become channels (``pixel_unshuffle``), so the UNet
  runs at a coarser resolution with more channels; with the spectral layout a patch holds
  correlated dimensions.
"""

from __future__ import annotations

import math

import torch
from diffusers import DDPMScheduler, UNet2DModel
from jaxtyping import Float, Int
from torch import Tensor, nn
from torch.nn import functional as F

from tl_diffusion_prior.priors.base import (
    DiffusionPrior,
    check_cov_eigenvalues,
    register_prior,
)
from tl_diffusion_prior.priors.gaussian_skip import GaussianNoisePredictor
from tl_diffusion_prior.priors.grid import (
    GridLayout,
    layout_from_samples,
)
from tl_diffusion_prior.priors.unet_config import UNetPriorConfig


class UNetDenoiser(nn.Module):
    """``eps_hat(z_t, timestep)`` on normalised vectors: grid, UNet, ungrid, optional Gaussian skip.

    Its forward runs exactly once per network evaluation.
    """

    def __init__(self, config: UNetPriorConfig, alphas_cumprod: Tensor) -> None:
        super().__init__()
        height, width = config.grid_shape
        self.layout = GridLayout(config.d_model, height, width)
        self.patch_size = config.patch_size
        cells_per_patch = config.patch_size**2
        self.unet = UNet2DModel.from_config(
            {
                **config.unet,
                "sample_size": config.unet_resolution,
                "in_channels": (1 + config.extra_channels) * cells_per_patch,
                "out_channels": cells_per_patch,
            }
        )
        if config.zero_init_output:
            nn.init.zeros_(self.unet.conv_out.weight)
            nn.init.zeros_(self.unet.conv_out.bias)
        self.position = (
            nn.Parameter(0.1 * torch.randn(config.position_channels, height, width))
            if config.position_channels
            else None
        )
        if config.coord_channels:
            rows = torch.linspace(-1.0, 1.0, height)[:, None].expand(height, width)
            cols = torch.linspace(-1.0, 1.0, width)[None, :].expand(height, width)
            self.register_buffer("coords", torch.stack([rows, cols]), persistent=False)
        else:
            self.coords = None
        self.gaussian = (
            GaussianNoisePredictor(config.d_model, alphas_cumprod) if config.gaussian_skip else None
        )

    def forward(
        self, z_t: Float[Tensor, "n d_model"], timesteps: Int[Tensor, "*n"]
    ) -> Float[Tensor, "n d_model"]:
        """Predicted noise; ``timesteps`` is one per row or a single 0-d timestep for all."""
        n = z_t.shape[0]
        channels = [self.layout.to_grid(z_t)]
        for extra in (self.coords, self.position):
            if extra is not None:
                channels.append(extra.to(z_t.dtype).expand(n, -1, -1, -1))
        image = torch.cat(channels, dim=1) if len(channels) > 1 else channels[0]
        patches = F.pixel_unshuffle(image, self.patch_size)
        predicted = F.pixel_shuffle(self.unet(patches, timesteps).sample, self.patch_size)
        eps = self.layout.from_grid(predicted)
        if self.gaussian is not None:
            eps = eps + self.gaussian(z_t, timesteps)
        return eps


@register_prior("unet")
class UNetPrior(DiffusionPrior):
    """DDPM epsilon-prediction prior with a ``UNet2DModel`` over gridded activations.

    Args:
        config: A :class:`UNetPriorConfig` (``UNetPriorConfig.preset("writeup", ...)`` for the
            write-up's UNet).
    """

    config_class = UNetPriorConfig
    config: UNetPriorConfig

    def __init__(self, config: UNetPriorConfig) -> None:
        super().__init__(config)
        # Training-only scheduler: `loss` calls its add_noise. Sampling never touches it.
        self.noise_scheduler = DDPMScheduler.from_config(config.scheduler)
        # A private float64 copy of the schedule for timestep matching and DDIM maths.
        self._alphas_cumprod = self.noise_scheduler.alphas_cumprod.to(torch.float64).clone()
        self.network = UNetDenoiser(config, self._alphas_cumprod)

    @property
    def num_train_timesteps(self) -> int:
        return int(self.config.scheduler["num_train_timesteps"])

    @property
    def default_sample_steps(self) -> int:
        return self.config.sample_steps

    # ------------------------------------------------------------------ data-dependent parts
    @torch.no_grad()
    def fit_data(self, x: Float[Tensor, "n d_model"]) -> None:
        """Fit the parts the config makes data-dependent, from RAW activations ``x``.

        Call after :meth:`set_normalization` and before training: the spectral layout (when
        ``layout="spectral"``) and the Gaussian skip's mean and covariance (when
        ``gaussian_skip``). Changing either after training invalidates what the UNet learned.
        A few thousand rows are plenty for d_model 576.
        """
        z = self._normalized_rows(x)
        if self.config.layout == "spectral":
            self._set_spectral_layout(z)
        if self.network.gaussian is not None:
            self.network.gaussian.fit(z)

    @torch.no_grad()
    def fit_layout(self, x: Float[Tensor, "n d_model"]) -> None:
        """Refit only the spectral layout from RAW activations ``x`` (normalised internally).

        The config says which layout and path (``layout="spectral"``, ``layout_path``) and is not
        changed; the permutation is a buffer (``network.layout.cell_of_dim``) saved in
        ``model.safetensors``. :meth:`fit_data` fits it too, with the Gaussian skip.
        """
        if self.config.layout != "spectral":
            raise ValueError(
                f"fit_layout needs a prior built with layout='spectral', got "
                f"layout={self.config.layout!r}; build the prior with "
                "UNetPriorConfig(layout='spectral', layout_path=...) and call fit_data."
            )
        self._set_spectral_layout(self._normalized_rows(x))

    def _set_spectral_layout(self, z: Tensor) -> None:
        height, width = self.config.grid_shape
        layout = layout_from_samples(z, height, width, self.config.layout_path)
        self.network.layout.set_layout(layout)

    # --------------------------------------------------------------------------- noise levels
    def timestep_for_t(self, t: float) -> int:
        """The DDPM timestep whose SNR ``ab / (1 - ab)`` is closest to ``((1 - t) / t) ** 2``."""
        if not 0.0 <= t <= 1.0:
            raise ValueError(f"t must be in [0, 1], got {t!r}.")
        if t >= 1.0:
            return self.num_train_timesteps - 1
        if t <= 0.0:
            return 0
        ab = self._alphas_cumprod
        log_snr = torch.log(ab) - torch.log1p(-ab)
        target = 2.0 * (math.log1p(-t) - math.log(t))
        return int((log_snr - target).abs().argmin())

    def _ddim_timesteps(self, start: int, num_steps: int) -> list[int]:
        # "trailing" spacing over [0, start]: begins exactly at `start`, and the last step jumps
        # to alpha_bar = 1 (clean). For start = T - 1 this is DDIMScheduler's trailing schedule.
        return [
            max(round((start + 1) * (num_steps - i) / num_steps) - 1, 0) for i in range(num_steps)
        ]

    def add_noise(
        self, z: Float[Tensor, "n d_model"], noise: Float[Tensor, "n d_model"], t: float
    ) -> Float[Tensor, "n d_model"]:
        ab = float(self._alphas_cumprod[self.timestep_for_t(t)])
        return (math.sqrt(ab) * z.float() + math.sqrt(1.0 - ab) * noise.float()).to(z.dtype)

    def posterior_mean(
        self, z_t: Float[Tensor, "n d_model"], t: float
    ) -> Float[Tensor, "n d_model"]:
        return self._ddim(z_t, [self.timestep_for_t(t)])

    # -------------------------------------------------------------------------- objective
    def _loss_normalized(
        self,
        z: Float[Tensor, "batch d_model"],
        generator: torch.Generator | None,
        levels: Float[Tensor, " batch"] | None = None,
    ) -> Float[Tensor, ""]:
        batch = z.shape[0]
        n_steps = self.num_train_timesteps
        if levels is None:
            timesteps = torch.randint(0, n_steps, (batch,), generator=generator, device=z.device)
        else:  # uniform integer timesteps: the quantile's bin
            timesteps = (levels * n_steps).long().clamp(0, n_steps - 1)
        noise = torch.randn(z.shape, generator=generator, device=z.device, dtype=torch.float32)
        z_t = self.noise_scheduler.add_noise(z.float(), noise, timesteps).to(z.dtype)
        eps = self.network(z_t, timesteps)
        # Padding cells never reach the loss: the network's output is un-gridded to the d_model
        # real cells first, so this mean is over exactly the real dims.
        return (eps.float() - noise).square().mean()

    def gaussian_reference_loss(
        self,
        cov_eigenvalues: Float[Tensor, " d"],
        data_second_moments: Float[Tensor, " d"] | None = None,
    ) -> float:
        """``mean_k mean_i ab_k lam_i / (ab_k lam_i + 1 - ab_k)`` over all training timesteps.

        The MMSE of ``eps`` given ``x_t`` per eigen-direction of variance ``lam_i``, averaged like
        the loss: uniformly over the integer timesteps and over the real dims. With
        ``data_second_moments`` ``m_i``, the same linear predictor ``eps_hat = g x_t``,
        ``g = sqrt(1 - ab) / (ab lam + 1 - ab)``, is scored on data of second moment ``m_i``:
        ``1 - 2 g sqrt(1 - ab) + g^2 (ab m + 1 - ab)``.
        """
        lam = check_cov_eigenvalues(cov_eigenvalues, self.config.d_model)
        ab = self._alphas_cumprod[:, None].to("cpu", torch.float64)
        if data_second_moments is None:
            return float((ab * lam / (ab * lam + 1.0 - ab)).mean())
        m = check_cov_eigenvalues(data_second_moments, self.config.d_model, "data_second_moments")
        gain = (1.0 - ab).sqrt() / (ab * lam + 1.0 - ab)
        mse = 1.0 - 2.0 * gain * (1.0 - ab).sqrt() + gain**2 * (ab * m + 1.0 - ab)
        return float(mse.mean())

    # --------------------------------------------------------------------------- sampling
    def _denoise_normalized(
        self,
        z: Float[Tensor, "n d_model"],
        t_start: float,
        num_steps: int,
        noise: Float[Tensor, "n d_model"],
    ) -> Float[Tensor, "n d_model"]:
        start = self.timestep_for_t(t_start)
        return self._ddim(self.add_noise(z, noise, t_start), self._ddim_timesteps(start, num_steps))

    def _sample_normalized(
        self, noise: Float[Tensor, "n d_model"], num_steps: int
    ) -> Float[Tensor, "n d_model"]:
        return self._ddim(noise, self._ddim_timesteps(self.num_train_timesteps - 1, num_steps))

    def _ddim(self, z_t: Tensor, timesteps: list[int]) -> Tensor:
        """Deterministic DDIM (eta = 0) through ``timesteps``, then to clean; one call per step.

        ``x0 = (x_k - sqrt(1 - ab_k) eps) / sqrt(ab_k)``, ``x_prev = sqrt(ab_prev) x0 +
        sqrt(1 - ab_prev) eps`` with ``ab_prev = 1`` after the last step, so one step returns the
        one-step estimate of the clean vector. The state stays in at least float32.
        """
        dtype = self.dtype
        state = z_t.to(torch.promote_types(dtype, torch.float32), copy=True)
        ab = self._alphas_cumprod.tolist()
        steps = torch.tensor(timesteps, dtype=torch.long, device=z_t.device)
        for i, k in enumerate(timesteps):
            eps = self.network(state.to(dtype), steps[i]).to(state.dtype)
            ab_prev = ab[timesteps[i + 1]] if i + 1 < len(timesteps) else 1.0
            x0 = (state - math.sqrt(1.0 - ab[k]) * eps) / math.sqrt(ab[k])
            state = math.sqrt(ab_prev) * x0 + math.sqrt(1.0 - ab_prev) * eps
        return state.to(dtype)
