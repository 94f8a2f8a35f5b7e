"""The settings of a steering (:class:`SteeringConfig`), reference norms, and the vector added.

The two scale modes (:func:`added_vector`):

* ``"absolute"``: the hook adds ``scale * vector``, the vector as given (its own norm counts).
* ``"relative"``: the hook adds ``scale * reference_norm * vector / ||vector||``, a vector whose
  norm is ``scale`` times the reference activation norm whatever the given vector's norm (the
  paper's ``alpha * act_norm * v / ||v||``). So ``r = 0.1`` adds a tenth of a typical activation's
  length. A difference-of-means vector's own norm (30-50 at SmolLM2's layer 15) plays no part.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from tl_diffusion_prior.core.config import ConfigBase
from tl_diffusion_prior.core.validation import check_choice, check_float, check_int
from tl_diffusion_prior.priors.base import DiffusionPrior
from tl_diffusion_prior.steering.noise import check_seed
from tl_diffusion_prior.steering.positions import POSITIONS

SCALE_MODES = ("absolute", "relative")
DENOISE_MODES = ("replace", "edit")
#: The defaults of a steering with a prior, shared by ``steer``, the CLI and the evaluations.
DEFAULT_T_START = 0.5
DEFAULT_NUM_STEPS = 20
DEFAULT_DENOISE_MODE = "replace"


@dataclass
class SteeringConfig(ConfigBase):
    """How to steer (everything but the model, hook, vector and prior).

    Attributes:
        scale: ``alpha`` in ``alpha * vector`` (``scale_mode="absolute"``), or ``r`` in
            ``r * reference_norm * vector / ||vector||`` (``"relative"``).
        scale_mode: ``"absolute"`` (add ``scale * vector``, the vector as given) or
            ``"relative"`` (add a vector of norm ``scale * reference_norm`` along ``vector``'s
            direction: the paper's ``r * mean activation norm at the hook * unit vector``).
        reference_norm: The norm for relative scales. None takes it from the prior's normaliser
            (:func:`reference_norm_from_prior`); without a prior it is required (measure it with
            :func:`~tl_diffusion_prior.steering.vector.mean_activation_norm`).
        t_start: Noise level the prior noises to before denoising, in (0, 1].
        num_steps: Network evaluations of the prior from ``t_start`` to 0.
        positions: ``"all"`` (every real position but the first), ``"prompt"`` (those before the
            prompt's end) or ``"generated"`` (the generated ones).
        seed: Seeds the denoising noise; None draws one from torch's global RNG when attaching.
        denoise_mode: What the prior (or projection) ``D`` does at a steered position ``h``:
            ``"replace"`` puts ``D(h + delta)`` there (the paper's on-manifold steering);
            ``"edit"`` puts ``h + D(h + delta) - D(h)`` there, with one noise for both terms: the
            model's own activation is kept and only the edit is mapped by the prior, so at scale
            0 nothing changes (the prior's reconstruction error cancels); it costs twice the
            prior's evaluations.
    """

    unknown_keys_label: ClassVar[str] = "SteeringConfig keys"

    scale: float | int
    scale_mode: str = "absolute"
    reference_norm: float | None = None
    t_start: float = DEFAULT_T_START
    num_steps: int = DEFAULT_NUM_STEPS
    positions: str = "all"
    seed: int | None = None
    denoise_mode: str = DEFAULT_DENOISE_MODE

    def __post_init__(self) -> None:
        self.scale = check_float("scale", self.scale)
        check_choice("scale_mode", self.scale_mode, SCALE_MODES)
        if self.reference_norm is not None:
            self.reference_norm = check_float(
                "reference_norm", self.reference_norm, minimum=0.0, min_open=True
            )
        self.t_start = check_float(
            "t_start", self.t_start, 0.0, 1.0, min_open=True, hint="(0 = clean, 1 = pure noise)"
        )
        check_int("num_steps", self.num_steps, minimum=1)
        check_choice("positions", self.positions, POSITIONS)
        check_choice("denoise_mode", self.denoise_mode, DENOISE_MODES)
        if self.seed is not None:
            check_seed(self.seed)


def reference_norm_from_prior(prior: DiffusionPrior) -> float:
    """Root-mean-square activation norm implied by the prior's normaliser statistics.

    ``sqrt(E||x||^2) = sqrt(||mean||^2 + sum(var))``, with ``var = std^2 - eps``. It is at least the
    mean norm ``E||x||`` and close to it when norms concentrate, as they do in high dimensions.
    """
    normalizer = prior.normalizer
    if not normalizer.is_fitted:
        raise ValueError(
            "The prior's normaliser has no statistics (set_normalization was never called), so "
            "it cannot give a reference norm; pass reference_norm= explicitly."
        )
    mean = normalizer.mean.detach().double()
    var = (normalizer.std.detach().double().square() - normalizer.eps).clamp_min(0)
    return float(torch.sqrt(mean.square().sum() + var.sum()))


def added_vector(
    vector: Tensor, config: SteeringConfig, prior: DiffusionPrior | None
) -> tuple[float, Tensor]:
    """``(alpha, delta)``: the vector ``delta`` the hook adds at every steered position, in
    ``vector``'s dtype and device, and its scale ``alpha``.

    ``"absolute"``: ``alpha = scale`` and ``delta = alpha * vector``. ``"relative"``: ``alpha =
    scale * reference norm`` (``config.reference_norm``, else the prior's
    :func:`reference_norm_from_prior`) and ``delta = alpha * vector / ||vector||``, so
    ``||delta|| = alpha`` for a vector of any norm. Computed in float64, then cast.
    """
    exact = vector.double()
    if config.scale_mode != "relative":
        return config.scale, (config.scale * exact).to(vector.dtype)
    norm = config.reference_norm
    if norm is None:
        if prior is None:
            raise ValueError(
                "scale_mode='relative' needs a reference norm: pass reference_norm= (e.g. "
                "mean_activation_norm(model, hook_name, texts)) or a prior with fitted "
                "normaliser statistics."
            )
        norm = reference_norm_from_prior(prior)
    length = float(exact.norm())
    if not length > 0:
        raise ValueError(
            "scale_mode='relative' steers along the vector's direction, but the vector is zero; "
            "pass a non-zero vector (or scale_mode='absolute')."
        )
    alpha = config.scale * norm
    return alpha, (exact * (alpha / length)).to(vector.dtype)


def steering_config(
    scale: float | None, config: SteeringConfig | None, overrides: dict[str, Any]
) -> SteeringConfig:
    """The :class:`SteeringConfig` that ``scale``, ``config`` and keyword ``overrides`` describe.

    ``config`` (if given) is the starting point; ``scale`` and every override replace its fields.
    """
    fields = {f.name for f in dataclasses.fields(SteeringConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise TypeError(
            f"Unknown steering option(s) {unknown}; the options are the SteeringConfig fields "
            f"{sorted(fields - {'scale'})}."
        )
    if config is not None and not isinstance(config, SteeringConfig):
        raise TypeError(f"config must be a SteeringConfig or None, got {type(config).__name__}.")
    if scale is not None:
        overrides = {**overrides, "scale": scale}
    if config is None:
        if "scale" not in overrides:
            raise TypeError("Pass the steering scale (scale=...) or a config=SteeringConfig(...).")
        return SteeringConfig(**overrides)
    return dataclasses.replace(config, **overrides)
