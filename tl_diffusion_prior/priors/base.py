"""The interface every diffusion prior implements, its config, save/load and the registry.

A prior models single residual-stream vectors of one hook. Public methods take and return RAW
activations; the prior z-scores them with its own
:class:`~tl_diffusion_prior.core.normalizer.Normalizer` and each design works in normalised space
through a few abstract methods:

* ``_loss_normalized(z, generator, levels)``: the training objective on clean normalised data;
* ``add_noise(z, noise, t)``: corrupt clean normalised data to noise level ``t`` (0 = clean);
* ``posterior_mean(z_t, t)``: the one-network-evaluation estimate of ``E[x0 | x_t]``;
* ``_denoise_normalized(z, t_start, num_steps, noise)``: ``add_noise`` to ``t_start``, then exactly
  ``num_steps`` network evaluations down to ``t = 0``;
* ``_sample_normalized(noise, num_steps)``: integrate from pure noise to ``t = 0``;
* ``gaussian_reference_loss(cov_eigenvalues)``: the objective's value for the optimal denoiser of a
  Gaussian with the data's covariance.

Each design also exposes ``network``: the ``nn.Module`` whose forward runs exactly once per network
evaluation (the contract tests count its calls).
"""

from __future__ import annotations

import abc
import os
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from jaxtyping import Float
from torch import Tensor, nn

from tl_diffusion_prior.constants import MODEL_FINGERPRINT_KEY
from tl_diffusion_prior.core.fingerprint import model_fingerprint as compute_model_fingerprint
from tl_diffusion_prior.core.integrity import check_same_source
from tl_diffusion_prior.core.precision import resolve_auto_dtype
from tl_diffusion_prior.core.pretrained import PretrainedConfig, PretrainedModule, Registry
from tl_diffusion_prior.core.validation import check_noise_levels, check_positive_int
from tl_diffusion_prior.priors.score import ScoreConfig, as_score_config, manifold_score

#: Architecture name -> prior class. Importing :mod:`tl_diffusion_prior.priors` fills it.
PRIOR_REGISTRY: Registry[DiffusionPrior] = Registry(
    "prior architecture",
    hint="Import the module that defines it (tl_diffusion_prior.priors registers the built-in "
    "ones) or fix the config.",
)


@dataclass(kw_only=True)
class PriorConfig(PretrainedConfig):
    """Fields shared by every prior design. Subclasses add the design's own fields.

    The shared fields and their checks come from
    :class:`~tl_diffusion_prior.core.pretrained.PretrainedConfig`; a prior must name its hook and
    source model.

    Attributes:
        architecture: Registry key of the design (``"mlp"``, ``"unet"``); fixed by each subclass.
        d_model: Size of the modelled activation vectors.
        hook_name: Full TransformerLens hook name the prior was trained on, e.g.
            ``"blocks.15.hook_resid_post"``.
        model_name: Name of the source model, e.g. ``"SmolLM2-135M-Instruct"``.
        norm_eps: Epsilon of the normaliser, ``std = sqrt(var + norm_eps)``.
        format_version: On-disk format version; files from a newer version are rejected.
    """

    registry: ClassVar[Registry] = PRIOR_REGISTRY
    registry_key: ClassVar[str] = "architecture"
    require_provenance: ClassVar[bool] = True
    saved_object: ClassVar[str] = "prior"
    #: The ``architecture`` value a subclass requires (None on the base class).
    expected_architecture: ClassVar[str | None] = None

    architecture: str
    hook_name: str
    model_name: str


def register_prior(name: str):
    """Class decorator: register a DiffusionPrior subclass under ``name`` (its architecture)."""
    return PRIOR_REGISTRY.register(name)


class DiffusionPrior(PretrainedModule, abc.ABC):
    """Base class of the diffusion priors over one hook's activations (see module docstring).

    ``save_pretrained``/``from_pretrained`` are
    :class:`~tl_diffusion_prior.core.pretrained.PretrainedModule`'s: ``from_pretrained`` on
    ``DiffusionPrior`` returns the class the saved config names, on a subclass it raises
    ValueError when the saved architecture is another one.

    Args:
        config: The design's config; its ``d_model`` and ``norm_eps`` size the normaliser.
    """

    config_class: ClassVar[type[PriorConfig]] = PriorConfig
    config: PriorConfig
    architecture: ClassVar[str]
    network: nn.Module

    # ----------------------------------------------------------------- design-specific pieces
    @abc.abstractmethod
    def _loss_normalized(
        self,
        z: Float[Tensor, "batch d_model"],
        generator: torch.Generator | None,
        levels: Float[Tensor, " batch"] | None = None,
    ) -> Float[Tensor, ""]:
        """Training loss on clean normalised data, reduced to a scalar mean.

        ``levels`` are the rows' noise levels as quantiles of the design's noise-level
        distribution, in [0, 1); None draws them uniformly with ``generator``.
        """

    @abc.abstractmethod
    def add_noise(
        self, z: Float[Tensor, "n d_model"], noise: Float[Tensor, "n d_model"], t: float
    ) -> Float[Tensor, "n d_model"]:
        """Corrupt clean normalised ``z`` to noise level ``t`` with standard-normal ``noise``."""

    @abc.abstractmethod
    def posterior_mean(
        self, z_t: Float[Tensor, "n d_model"], t: float
    ) -> Float[Tensor, "n d_model"]:
        """One-evaluation estimate of the clean normalised vector, ``E[x0 | x_t]``."""

    @abc.abstractmethod
    def _denoise_normalized(
        self,
        z: Float[Tensor, "n d_model"],
        t_start: float,
        num_steps: int,
        noise: Float[Tensor, "n d_model"],
    ) -> Float[Tensor, "n d_model"]:
        """Noise ``z`` to ``t_start`` with ``noise``, then exactly ``num_steps`` evaluations."""

    @abc.abstractmethod
    def _sample_normalized(
        self, noise: Float[Tensor, "n d_model"], num_steps: int
    ) -> Float[Tensor, "n d_model"]:
        """Integrate from pure noise to ``t = 0`` in ``num_steps`` network evaluations."""

    @abc.abstractmethod
    def gaussian_reference_loss(
        self,
        cov_eigenvalues: Float[Tensor, " d"],
        data_second_moments: Float[Tensor, " d"] | None = None,
    ) -> float:
        """Loss of the optimal denoiser for a Gaussian with these normalised-covariance eigenvalues.

        Same objective and reduction as :meth:`loss`; compare it to a held-out loss to see how much
        the prior has learned beyond second-order statistics. Without ``data_second_moments`` the
        denoiser is scored on the Gaussian it was built for; with them, on data whose second
        moment about the Gaussian's mean along eigenvector ``i`` is ``data_second_moments[i]``
        (the held-out loss of a Gaussian denoiser fitted on other rows).
        """

    def fit_data(self, x: Float[Tensor, "n d_model"]) -> None:  # noqa: B027 (optional hook)
        """Fit the parts of the design that depend on data, from RAW activations ``x``.

        The trainer calls it once, after :meth:`set_normalization` and before the first step, with
        a few thousand training rows. The default does nothing; a design overrides it when its
        config makes something data-dependent (the UNet's spectral layout and Gaussian skip).
        """

    @property
    def default_sample_steps(self) -> int:
        """Number of network evaluations :meth:`sample` uses when none is given."""
        return 100

    # ------------------------------------------------------------------------ public API
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def num_parameters(self) -> int:
        """Number of trainable parameters (normaliser statistics excluded)."""
        return sum(p.numel() for p in self.parameters())

    def set_normalization(self, mean: Float[Tensor, " d_model"], var: Float[Tensor, " d_model"]):
        """Set the normaliser's statistics (any float dtype, e.g. float64 running stats)."""
        self.normalizer.set_stats(mean, var)

    def loss(
        self,
        x: Float[Tensor, "batch d_model"],
        generator: torch.Generator | None = None,
        levels: Tensor | None = None,
    ) -> Float[Tensor, ""]:
        """Training loss on RAW activations ``x``; ``t`` and noise are drawn with ``generator``.

        ``generator`` must live on the prior's device. ``levels`` (``[batch]``, in [0, 1)) fixes
        each row's noise level as a quantile of the training distribution of levels instead of
        drawing it: evenly spread levels make a validation loss far less noisy, since most of the
        loss's variance comes from the noise level.
        """
        self._check_activations(x, "x")
        if x.ndim != 2:
            raise ValueError(f"x must have shape [batch, d_model], got {tuple(x.shape)}.")
        check_noise_levels(levels, x.shape[0])
        z = self._to_normalized(x)
        if levels is not None:
            levels = levels.to(z.device, torch.float32)
        return self._loss_normalized(z, generator, levels)

    @torch.no_grad()
    def sample(
        self, n: int, num_steps: int | None = None, generator: torch.Generator | None = None
    ) -> Float[Tensor, "n d_model"]:
        """Draw ``n`` activations (raw space, prior's dtype and device) from pure noise."""
        check_positive_int("n", n)
        num_steps = self.default_sample_steps if num_steps is None else num_steps
        check_positive_int("num_steps", num_steps)
        noise = self._randn((n, self.config.d_model), generator)
        z = self._sample_normalized(noise, num_steps)
        return self.normalizer.denormalize(z.float()).to(self.dtype)

    @torch.no_grad()
    def denoise(
        self,
        x: Float[Tensor, "*batch d_model"],
        t_start: float = 0.5,
        num_steps: int = 20,
        generator: torch.Generator | None = None,
        noise: Float[Tensor, "*batch d_model"] | None = None,
    ) -> Float[Tensor, "*batch d_model"]:
        """Noise RAW ``x`` to ``t_start``, then run exactly ``num_steps`` evaluations back to 0.

        Args:
            x: Activations of any leading shape; the result has its shape, dtype and device.
            t_start: Noise level in (0, 1]; 0.5 is the paper's steering setting.
            num_steps: Network evaluations from ``t_start`` to 0. With 1 the result is the
                one-step posterior-mean estimate of the clean activation.
            generator: Draws the noise when ``noise`` is None.
            noise: Standard-normal noise in normalised space, shaped like ``x``, for reproducible
                or shared-noise comparisons.
        """
        self._check_activations(x, "x")
        if isinstance(t_start, bool) or not isinstance(t_start, int | float):
            raise TypeError(f"t_start must be a float, got {type(t_start).__name__}.")
        if not 0.0 < t_start <= 1.0:
            raise ValueError(
                f"t_start must be in (0, 1] (0 = clean, 1 = pure noise), got {t_start!r}."
            )
        check_positive_int("num_steps", num_steps)
        if noise is not None:
            if not isinstance(noise, Tensor) or not noise.is_floating_point():
                raise TypeError(f"noise must be a float tensor, got {type(noise).__name__}.")
            if noise.shape != x.shape:
                raise ValueError(
                    f"noise must have x's shape {tuple(x.shape)}, got {tuple(noise.shape)}."
                )
        flat = x.reshape(-1, self.config.d_model)
        z = self._to_normalized(flat)
        if noise is None:
            eps = self._randn(tuple(z.shape), generator)
        else:
            eps = noise.reshape(z.shape).to(device=z.device, dtype=z.dtype)
        out = self._denoise_normalized(z, float(t_start), num_steps, eps)
        return self.normalizer.denormalize(out.float()).to(x.dtype).reshape(x.shape).to(x.device)

    def score(
        self,
        x: Float[Tensor, "*batch d_model"],
        method: str | ScoreConfig = "elbo",
        *,
        levels: tuple[float, ...] | list[float] | None = None,
        seed: int = 0,
        noise: Tensor | None = None,
    ) -> Float[Tensor, " *batch"]:
        """Per-vector manifold score of RAW ``x`` (float32; larger = less typical); ``method`` is
        "elbo", "one_step", "ode" or a ScoreConfig: see :mod:`tl_diffusion_prior.priors.score`."""
        return manifold_score(self, x, as_score_config(method, levels, seed), noise)

    def check_compatible(
        self,
        *,
        hook_name: str | None = None,
        d_model: int | None = None,
        model_name: str | None = None,
        model_fingerprint: str | None = None,
        model: nn.Module | None = None,
    ) -> None:
        """Raise ValueError if the prior was trained for another hook, width or model.

        ``model_fingerprint`` (:func:`~tl_diffusion_prior.core.fingerprint.model_fingerprint` of
        the model to use the prior with; ``model`` computes it) is compared with the one the
        training activations were captured from (``training_record["model_fingerprint"]``): it
        tells apart two models that share a name. A prior trained before fingerprints were
        recorded is not compared.
        """
        if model is not None and model_fingerprint is None:
            model_fingerprint = compute_model_fingerprint(model)
        cfg = self.config
        if d_model is not None and d_model != cfg.d_model:
            raise ValueError(
                f"This prior models d_model={cfg.d_model} activations, not d_model={d_model}; "
                f"use a prior trained on {model_name or 'this model'}'s activations."
            )
        if hook_name is not None and hook_name != cfg.hook_name:
            raise ValueError(
                f"This prior was trained on {cfg.hook_name!r}, not {hook_name!r}; attach it at "
                f"{cfg.hook_name!r} or train a prior for {hook_name!r}."
            )
        if model_name is not None and model_name != cfg.model_name:
            raise ValueError(
                f"This prior was trained on {cfg.model_name!r} activations, not {model_name!r}; "
                "use a prior trained on this model."
            )
        check_same_source(
            "Model fingerprint",
            (f"the prior (trained on {cfg.model_name!r})", self.source_fingerprint),
            ("the model it is used with", model_fingerprint),
            "The model's weights differ from those the prior was trained on (another checkpoint "
            "or fine-tune under the same name); use the same model, or train a prior on this one.",
        )

    @property
    def source_fingerprint(self) -> str | None:
        """The weight fingerprint of the model the training activations came from, if recorded."""
        value = self.training_record.get(MODEL_FINGERPRINT_KEY)
        return value if isinstance(value, str) and value else None

    # ---------------------------------------------------------------------------- helpers
    def _check_activations(self, x: Any, name: str) -> None:
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise TypeError(f"{name} must be a float tensor, got {type(x).__name__}.")
        if x.ndim == 0 or x.shape[-1] != self.config.d_model:
            raise ValueError(
                f"{name} must have last dimension d_model={self.config.d_model}, got shape "
                f"{tuple(x.shape)}; this prior was trained on {self.config.hook_name!r} of "
                f"{self.config.model_name!r}."
            )

    def _normalized_rows(self, x: Tensor) -> Tensor:
        """RAW rows ``x`` [n >= 2, d_model], normalised in float32, for ``fit_data``."""
        self._check_activations(x, "x")
        if x.ndim != 2 or x.shape[0] < 2:
            raise ValueError(f"x must have shape [n >= 2, d_model], got {tuple(x.shape)}.")
        if not self.normalizer.is_fitted:
            raise ValueError(
                "The normaliser has no statistics yet; call set_normalization(mean, var) before "
                "fit_data/fit_layout (they work on normalised activations)."
            )
        return self.normalizer.normalize(x.to(self.normalizer.mean.device, torch.float32))

    def _to_normalized(self, x: Tensor) -> Tensor:
        # Normalise in float32 before casting to a low-precision prior dtype, so bf16 priors
        # lose no more than the final rounding.
        return self.normalizer.normalize(x.to(self.normalizer.mean.device, torch.float32)).to(
            self.dtype
        )

    def _randn(self, shape: tuple[int, ...], generator: torch.Generator | None) -> Tensor:
        device = generator.device if generator is not None else self.device
        eps = torch.randn(shape, generator=generator, device=device, dtype=torch.float32)
        return eps.to(device=self.device, dtype=self.dtype)


def load_prior(
    directory: str | os.PathLike,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    *,
    verify: bool = True,
) -> DiffusionPrior:
    """Load a saved prior of whatever architecture its ``config.json`` names.

    ``dtype`` is the weights' dtype: None keeps the saved one, ``"auto"`` is bfloat16 where
    ``device`` computes it natively and float32 elsewhere
    (:func:`~tl_diffusion_prior.core.precision.resolve_auto_dtype`). ``verify=False`` skips
    comparing the weights with their recorded checksum (see
    :meth:`~tl_diffusion_prior.core.pretrained.PretrainedModule.from_pretrained`).
    """
    dtype = resolve_auto_dtype(dtype, device)
    return DiffusionPrior.from_pretrained(directory, device=device, dtype=dtype, verify=verify)


def check_cov_eigenvalues(values: Tensor, d_model: int, name: str = "cov_eigenvalues") -> Tensor:
    """``values`` as a float64 CPU spectrum of ``d_model`` non-negative numbers, or a clear error.

    Round-off leaves the smallest eigenvalues of a PSD covariance a hair below zero; those are
    clamped, anything clearly negative is refused.
    """
    if not isinstance(values, Tensor) or not values.is_floating_point():
        raise TypeError(f"{name} must be a float tensor, got {type(values).__name__}.")
    lam = values.detach().to("cpu", torch.float64)
    if lam.shape != (d_model,):
        raise ValueError(
            f"{name} must hold one value per eigen-direction of the normalised data covariance, "
            f"all d_model={d_model} of them (the loss averages over every dim), got shape "
            f"{tuple(lam.shape)}."
        )
    if not torch.isfinite(lam).all():
        raise ValueError(f"{name} contains NaN or inf.")
    tol = 1e-6 * max(float(lam.abs().max()), 1.0)
    if float(lam.min()) < -tol:
        raise ValueError(
            f"{name} must be non-negative (a covariance spectrum), got a minimum of "
            f"{float(lam.min()):.3g}."
        )
    return lam.clamp_min(0.0)
