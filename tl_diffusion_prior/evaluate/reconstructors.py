"""One "project back onto the manifold" interface for every method, priors included.

Every metric takes :class:`Reconstructor` objects, so priors and baselines are treated alike:

* ``reconstruct(x)``: the method's reconstruction of clean RAW activations (for noise-based methods:
  noise to their level ``t`` with fresh noise, then restore; this is also what on-manifold steering
  does to a steered activation);
* ``restore(x_noisy, noise_std)``: restoration of ``x + noise_std * eps`` (``eps`` standard normal
  in normalised space). For the priors and the Gaussian posterior the perturbed vector already *is*
  a point on the noise path: ``z + s eps`` scaled by ``1 - t`` with ``t = s / (1 + s)`` equals
  ``(1 - t) z + t eps``, so restoration is ``denoise(x_noisy, t_start=s / (1 + s), noise=0)``: the
  *matched-t* protocol, which uses what is known about the noise and adds none. The Gaussian
  posterior mean at the matched ``t`` is the Wiener filter. For PCA and the SAE restoration is the
  reconstruction of the noisy input; the identity leaves it alone ("noise left alone").
  :class:`RoundTripReconstructor` gives the other protocol, the paper's round trip: noise the
  already-noisy input again to a fixed ``t`` and denoise from there.

Each reconstructor carries ``name`` (the method, one curve per name) and ``setting`` (its knob
values, JSON-ready), which the report records next to every number.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from jaxtyping import Float
from torch import Tensor

from tl_diffusion_prior.evaluate.baselines.gaussian import GaussianBaseline, check_noise_level
from tl_diffusion_prior.evaluate.baselines.sae import TopKSAE
from tl_diffusion_prior.evaluate.baselines.sae_lens_baseline import SAELensBaseline
from tl_diffusion_prior.priors.base import DiffusionPrior


@runtime_checkable
class Reconstructor(Protocol):
    """What every method offers the metrics (see module docstring)."""

    name: str
    setting: dict

    def reconstruct(
        self, x: Float[Tensor, "*batch d_model"], *, generator: torch.Generator | None = None
    ) -> Float[Tensor, "*batch d_model"]: ...

    def restore(
        self,
        x_noisy: Float[Tensor, "*batch d_model"],
        noise_std: float,
        *,
        generator: torch.Generator | None = None,
    ) -> Float[Tensor, "*batch d_model"]: ...


def label(reconstructor: Reconstructor) -> str:
    """``"name (k=64)"``: a unique, human-readable key for one method at one setting."""
    if not reconstructor.setting:
        return reconstructor.name
    knobs = ", ".join(f"{key}={value}" for key, value in reconstructor.setting.items())
    return f"{reconstructor.name} ({knobs})"


def noise_std_to_t(noise_std: float) -> float:
    """Flow level ``t = s / (1 + s)`` at which ``z + s eps`` (rescaled) lies on the noise path."""
    if isinstance(noise_std, bool) or not isinstance(noise_std, int | float) or noise_std < 0:
        raise ValueError(f"noise_std must be a non-negative float, got {noise_std!r}.")
    return float(noise_std) / (1.0 + float(noise_std))


def _standard_normal_like(
    x: Tensor, d_model: int, generator: torch.Generator | None
) -> Float[Tensor, "n d_model"]:
    device = generator.device if generator is not None else x.device
    n = x.numel() // d_model
    return torch.randn(n, d_model, generator=generator, device=device, dtype=torch.float32)


class IdentityReconstructor:
    """Leaves activations alone: the "do nothing" reference (delta LM exactly 0 when clean)."""

    def __init__(self, name: str = "identity") -> None:
        self.name = name
        self.setting: dict = {}

    def reconstruct(self, x, *, generator=None):
        return x.clone()

    def restore(self, x_noisy, noise_std, *, generator=None):
        return x_noisy.clone()


class PCAReconstructor:
    """Projection onto the top-``k`` principal components of the normalised training data."""

    def __init__(self, gaussian: GaussianBaseline, k: int, name: str = "PCA") -> None:
        if not isinstance(gaussian, GaussianBaseline):
            raise TypeError(f"gaussian must be a GaussianBaseline, got {type(gaussian).__name__}.")
        if not 1 <= k <= gaussian.config.d_model:
            raise ValueError(f"k must be in [1, {gaussian.config.d_model}], got {k!r}.")
        self.gaussian, self.k = gaussian, int(k)
        self.name = name
        self.setting = {"k": self.k}

    def reconstruct(self, x, *, generator=None):
        return self.gaussian.project(x, self.k)

    def restore(self, x_noisy, noise_std, *, generator=None):
        return self.gaussian.project(x_noisy, self.k)


class SAEReconstructor:
    """The SAE's reconstruction; restoration reconstructs the noisy input.

    ``sae`` is our :class:`~tl_diffusion_prior.evaluate.baselines.sae.TopKSAE` or any SAELens SAE
    wrapped in a :class:`~tl_diffusion_prior.evaluate.baselines.sae_lens_baseline.SAELensBaseline`
    (which applies it in the space it was trained in: the priors' normalised one, or raw).
    """

    def __init__(self, sae: TopKSAE | SAELensBaseline, name: str | None = None) -> None:
        if isinstance(sae, TopKSAE):
            self.name = name or "SAE"
            self.setting = {"d_sae": sae.config.d_sae, "k": sae.config.k}
        elif isinstance(sae, SAELensBaseline):
            self.name = name or "SAELens SAE"
            self.setting = sae.setting()
        else:
            raise TypeError(
                f"sae must be a TopKSAE or an SAELensBaseline, got {type(sae).__name__}."
            )
        self.sae = sae

    def reconstruct(self, x, *, generator=None):
        return self.sae.reconstruct(x)

    def restore(self, x_noisy, noise_std, *, generator=None):
        return self.sae.reconstruct(x_noisy)


class GaussianPosteriorReconstructor:
    """Gaussian posterior mean (Wiener filter) or sample at flow level ``t``."""

    def __init__(
        self,
        gaussian: GaussianBaseline,
        t: float,
        mode: str = "mean",
        name: str | None = None,
    ) -> None:
        if not isinstance(gaussian, GaussianBaseline):
            raise TypeError(f"gaussian must be a GaussianBaseline, got {type(gaussian).__name__}.")
        if mode not in ("mean", "sample"):
            raise ValueError(f"mode must be 'mean' or 'sample', got {mode!r}.")
        self.gaussian, self.t, self.mode = gaussian, check_noise_level(t), mode
        self.name = name or f"Gaussian posterior {mode}"
        self.setting = {"t": self.t}

    def reconstruct(self, x, *, generator=None):
        d = self.gaussian.config.d_model
        noise = _standard_normal_like(x, d, generator).reshape(x.shape)
        return self.gaussian.denoise(x, self.t, self.mode, generator=generator, noise=noise)

    def restore(self, x_noisy, noise_std, *, generator=None):
        t = noise_std_to_t(noise_std)
        zeros = torch.zeros_like(x_noisy)
        return self.gaussian.denoise(x_noisy, t, self.mode, generator=generator, noise=zeros)


class PriorReconstructor:
    """A diffusion prior's noise-to-``t_start``-then-denoise round trip.

    Args:
        prior: Any :class:`~tl_diffusion_prior.priors.base.DiffusionPrior`.
        t_start: Noise level of ``reconstruct``.
        num_steps: Network evaluations back to ``t = 0``; 1 gives the one-step posterior-mean
            estimate ``E[x | z_t]``.
        name: Method name; default ``"<architecture> prior"`` plus ``" one-step"`` for 1 step.
    """

    def __init__(
        self,
        prior: DiffusionPrior,
        t_start: float = 0.5,
        num_steps: int = 20,
        name: str | None = None,
    ) -> None:
        if not isinstance(prior, DiffusionPrior):
            raise TypeError(f"prior must be a DiffusionPrior, got {type(prior).__name__}.")
        if not 0.0 < t_start <= 1.0:
            raise ValueError(f"t_start must be in (0, 1], got {t_start!r}.")
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
            raise ValueError(f"num_steps must be a positive int, got {num_steps!r}.")
        self.prior, self.t_start, self.num_steps = prior, float(t_start), num_steps
        default = f"{prior.config.architecture} prior" + (" one-step" if num_steps == 1 else "")
        self.name = name or default
        self.setting = {"t": self.t_start, "num_steps": num_steps}

    def reconstruct(self, x, *, generator=None):
        noise = _standard_normal_like(x, self.prior.config.d_model, generator).reshape(x.shape)
        return self.prior.denoise(x, t_start=self.t_start, num_steps=self.num_steps, noise=noise)

    def restore(self, x_noisy, noise_std, *, generator=None):
        t = noise_std_to_t(noise_std)
        if t == 0.0:
            return x_noisy.clone()
        zeros = torch.zeros_like(x_noisy)
        return self.prior.denoise(x_noisy, t_start=t, num_steps=self.num_steps, noise=zeros)


class RoundTripReconstructor:
    """Restoration by the paper's round trip: the noisy input is noised *again* to the inner
    prior's ``t_start`` with fresh noise and denoised, ignoring that it is already noisy.

    Reported beside the matched-t restoration (:meth:`PriorReconstructor.restore`) so the cost of
    throwing away what is known about the noise is visible; reconstruction is unchanged.
    """

    def __init__(self, inner: PriorReconstructor, name: str | None = None) -> None:
        if not isinstance(inner, PriorReconstructor):
            raise TypeError(f"inner must be a PriorReconstructor, got {type(inner).__name__}.")
        self.inner = inner
        self.name = name or f"{inner.name} round trip"
        self.setting = dict(inner.setting)

    def reconstruct(self, x, *, generator=None):
        return self.inner.reconstruct(x, generator=generator)

    def restore(self, x_noisy, noise_std, *, generator=None):
        return self.inner.reconstruct(x_noisy, generator=generator)
