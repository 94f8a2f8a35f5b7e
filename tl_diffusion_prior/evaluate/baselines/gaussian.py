"""One full-covariance Gaussian fit that gives PCA projection and the Gaussian posterior denoiser.

The fit is the mean ``mu`` and the eigendecomposition ``Sigma = V diag(lam) V^T`` of the
normalised training activations, in float64. From it:

* **PCA** with any ``k``: ``z -> mu + V_k V_k^T (z - mu)`` (``k = d_model`` is the identity);
* **Gaussian posterior** at flow-matching level ``t`` (``z_t = (1 - t) x + t eps``, as in the MLP
  prior; the UNet prior means the same corruption via SNR matching). With ``a = 1 - t`` and
  ``b = t``, in the eigenbasis each coordinate is an independent scalar Gaussian problem, so

      E[x | z_t]   = mu + V diag(a lam / (a^2 lam + b^2)) V^T (z_t - a mu)      (Wiener filter)
      Cov[x | z_t] = V diag(lam b^2 / (a^2 lam + b^2)) V^T

  It is the best any denoiser can do if the activations were Gaussian, hence the fair linear
  baseline for every noise-to-``t``-then-restore comparison;
* **samples** ``mu + V diag(sqrt(lam)) xi`` (a reference for the Frechet distance, which only sees
  the first two moments: this baseline reaches the floor by construction).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from jaxtyping import Float
from torch import Tensor

from tl_diffusion_prior.capture.buffer import ActivationRingBuffer
from tl_diffusion_prior.core.moments import covariance
from tl_diffusion_prior.core.normalizer import Normalizer
from tl_diffusion_prior.core.validation import check_positive_int
from tl_diffusion_prior.evaluate.baselines.base import (
    Baseline,
    BaselineConfig,
    activation_rows,
    register_baseline,
)


@dataclass(kw_only=True)
class GaussianBaselineConfig(BaselineConfig):
    """Config of :class:`GaussianBaseline` (no knobs: ``k`` and ``t`` are chosen per call)."""

    expected_kind: ClassVar[str | None] = "gaussian"
    kind: str = "gaussian"


def check_noise_level(t: float, name: str = "t") -> float:
    if isinstance(t, bool) or not isinstance(t, int | float):
        raise TypeError(f"{name} must be a float, got {type(t).__name__}.")
    if not 0.0 <= float(t) <= 1.0:
        raise ValueError(f"{name} must be in [0, 1] (0 = clean, 1 = pure noise), got {t!r}.")
    return float(t)


@register_baseline("gaussian")
class GaussianBaseline(Baseline):
    """Full-covariance Gaussian over normalised activations (PCA + Wiener-filter posterior).

    Build it with :meth:`fit`; all public methods take and return RAW activations with the input's
    shape, dtype and device, computing in float64 internally.
    """

    config_class = GaussianBaselineConfig
    config: GaussianBaselineConfig
    mean: Tensor
    eigenvalues: Tensor
    eigenvectors: Tensor

    def __init__(self, config: GaussianBaselineConfig) -> None:
        super().__init__(config)
        d = config.d_model
        self.register_buffer("mean", torch.zeros(d, dtype=torch.float64))
        # Descending order, so V[:, :k] spans the top-k principal subspace.
        self.register_buffer("eigenvalues", torch.ones(d, dtype=torch.float64))
        self.register_buffer("eigenvectors", torch.eye(d, dtype=torch.float64))

    @classmethod
    @torch.no_grad()
    def fit(
        cls,
        source: ActivationRingBuffer | Tensor,
        normalizer: Normalizer,
        *,
        hook: str | int | None = None,
        max_rows: int | None = None,
        hook_name: str = "",
        model_name: str = "",
    ) -> GaussianBaseline:
        """Fit mean and full covariance of ``normalizer.normalize(rows)`` in float64.

        ``normalizer`` should come from ``fit_normalizer`` on the same buffer, so that the
        baseline's normalised space is the priors'.
        """
        rows = activation_rows(source, hook=hook, max_rows=max_rows)
        d = rows.shape[1]
        if normalizer.d_model != d:
            raise ValueError(f"normalizer has d_model={normalizer.d_model}, rows have {d}.")
        if rows.shape[0] < 2:
            raise ValueError(f"Need at least 2 rows to fit a covariance, got {rows.shape[0]}.")
        mean, cov = covariance(rows, normalizer.normalize)
        n = rows.shape[0]
        eigenvalues, eigenvectors = torch.linalg.eigh(cov)
        order = torch.argsort(eigenvalues, descending=True)
        config = GaussianBaselineConfig(
            d_model=d,
            hook_name=hook_name,
            model_name=model_name,
            norm_eps=normalizer.eps,
        )
        baseline = cls(config)
        baseline.record_training({"n_rows": int(n)})
        baseline.normalizer.load_state_dict(normalizer.state_dict())
        baseline.mean.copy_(mean)
        baseline.eigenvalues.copy_(eigenvalues[order].clamp_min(0.0))
        baseline.eigenvectors.copy_(eigenvectors[:, order])
        return baseline.to(rows.device)

    # ------------------------------------------------------------------ normalised space
    def _normalize64(self, x: Tensor) -> Tensor:
        self.check_activations(x)
        flat = x.reshape(-1, self.config.d_model)
        return self.normalizer.normalize(flat.to(self.device, torch.float32)).double()

    def _denormalize_like(self, z: Tensor, x: Tensor) -> Tensor:
        raw = self.normalizer.denormalize(z.float())
        return raw.reshape(x.shape).to(device=x.device, dtype=x.dtype)

    def _randn_like(self, z: Tensor, generator: torch.Generator | None) -> Tensor:
        device = generator.device if generator is not None else z.device
        eps = torch.randn(z.shape, generator=generator, device=device, dtype=torch.float32)
        return eps.to(z.device, torch.float64)

    def project_normalized(
        self, z: Float[Tensor, "n d_model"], k: int
    ) -> Float[Tensor, "n d_model"]:
        """PCA projection of normalised ``z`` onto the top-``k`` principal subspace (float64)."""
        check_positive_int("k", k)
        if k > self.config.d_model:
            raise ValueError(f"k must be <= d_model={self.config.d_model}, got {k}.")
        basis = self.eigenvectors[:, :k]
        return self.mean + ((z.double() - self.mean) @ basis) @ basis.T

    def posterior_coefficients(self, t: float) -> tuple[Tensor, Tensor]:
        """Per-eigendirection gain ``a lam / (a^2 lam + b^2)`` and variance ``lam b^2 / (...)``."""
        t = check_noise_level(t)
        a, b = 1.0 - t, t
        lam = self.eigenvalues
        denom = a * a * lam + b * b
        if t == 0.0:
            # Clean input: the posterior is the input itself, with no uncertainty.
            return torch.full_like(lam, 1.0), torch.zeros_like(lam)
        return a * lam / denom, lam * b * b / denom

    def posterior_mean_normalized(
        self, z_t: Float[Tensor, "n d_model"], t: float
    ) -> Float[Tensor, "n d_model"]:
        """``E[x | z_t]`` in normalised space for ``z_t = (1 - t) x + t eps`` (float64)."""
        gain, _ = self.posterior_coefficients(t)
        centred = (z_t.double() - (1.0 - t) * self.mean) @ self.eigenvectors
        return self.mean + (centred * gain) @ self.eigenvectors.T

    def posterior_sample_normalized(
        self,
        z_t: Float[Tensor, "n d_model"],
        t: float,
        generator: torch.Generator | None = None,
    ) -> Float[Tensor, "n d_model"]:
        """A draw from ``p(x | z_t)``: the posterior mean plus ``N(0, Cov[x | z_t])`` noise."""
        _, var = self.posterior_coefficients(t)
        xi = self._randn_like(z_t.double(), generator)
        return self.posterior_mean_normalized(z_t, t) + (xi * var.sqrt()) @ self.eigenvectors.T

    # ------------------------------------------------------------------------ raw space
    @torch.no_grad()
    def project(
        self, x: Float[Tensor, "*batch d_model"], k: int
    ) -> Float[Tensor, "*batch d_model"]:
        """PCA reconstruction of RAW ``x`` with ``k`` components."""
        return self._denormalize_like(self.project_normalized(self._normalize64(x), k), x)

    @torch.no_grad()
    def denoise(
        self,
        x: Float[Tensor, "*batch d_model"],
        t: float,
        mode: str = "mean",
        generator: torch.Generator | None = None,
        noise: Float[Tensor, "*batch d_model"] | None = None,
    ) -> Float[Tensor, "*batch d_model"]:
        """Noise RAW ``x`` to level ``t`` (normalised space), then take the posterior mean/sample.

        Mirrors ``DiffusionPrior.denoise``: ``noise`` (standard normal, normalised space, shaped
        like ``x``) is drawn with ``generator`` when not given; pass zeros to treat ``x`` itself as
        the noisy observation ``z_t / (1 - t)``.
        """
        t = check_noise_level(t)
        z = self._normalize64(x)
        if noise is None:
            eps = self._randn_like(z, generator)
        else:
            if noise.shape != x.shape:
                raise ValueError(f"noise must have x's shape {tuple(x.shape)}, got {noise.shape}.")
            eps = noise.reshape(z.shape).to(z.device, torch.float64)
        z_t = (1.0 - t) * z + t * eps
        if mode == "mean":
            out = self.posterior_mean_normalized(z_t, t)
        elif mode == "sample":
            out = self.posterior_sample_normalized(z_t, t, generator)
        else:
            raise ValueError(f"mode must be 'mean' or 'sample', got {mode!r}.")
        return self._denormalize_like(out, x)

    @torch.no_grad()
    def sample(
        self, n: int, generator: torch.Generator | None = None
    ) -> Float[Tensor, "n d_model"]:
        """``n`` RAW activations from the fitted Gaussian (float32)."""
        check_positive_int("n", n)
        device = generator.device if generator is not None else self.device
        xi = torch.randn(n, self.config.d_model, generator=generator, device=device)
        z = self.mean + (xi.to(self.device, torch.float64) * self.eigenvalues.sqrt()) @ (
            self.eigenvectors.T
        )
        return self.normalizer.denormalize(z.float())

    def explained_variance(self, k: int) -> float:
        """Fraction of the normalised variance in the top ``k`` components."""
        lam = self.eigenvalues
        return float(lam[:k].sum() / lam.sum())
