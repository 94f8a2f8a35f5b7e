"""The settings of a steering (:class:`SteeringConfig`) and reference norms for relative scales."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from tl_diffusion_prior.core.config import ConfigBase
from tl_diffusion_prior.priors.base import DiffusionPrior
from tl_diffusion_prior.steering.noise import check_seed
from tl_diffusion_prior.steering.positions import POSITIONS

SCALE_MODES = ("absolute", "relative")


@dataclass
class SteeringConfig(ConfigBase):
    """How to steer (everything but the model, hook, vector and prior).

    Attributes:
        scale: ``alpha`` itself (``scale_mode="absolute"``) or ``r`` in ``alpha = r * norm``.
        scale_mode: ``"absolute"`` or ``"relative"`` (the paper's ``alpha = r * mean activation
            norm at the hook``).
        reference_norm: The norm for relative scales. None takes it from the prior's normaliser
            (:func:`reference_norm_from_prior`); without a prior it is required (measure it with
            :func:`~tl_diffusion_prior.steering.vector.mean_activation_norm`).
        t_start: Noise level the prior noises to before denoising, in (0, 1].
        num_steps: Network evaluations of the prior from ``t_start`` to 0.
        positions: ``"all"`` (every real position but the first), ``"prompt"`` (those before the
            prompt's end) or ``"generated"`` (the generated ones).
        seed: Seeds the denoising noise; None draws one from torch's global RNG when attaching.
    """

    unknown_keys_label: ClassVar[str] = "SteeringConfig keys"

    scale: float | int
    scale_mode: str = "absolute"
    reference_norm: float | None = None
    t_start: float = 0.5
    num_steps: int = 20
    positions: str = "all"
    seed: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.scale, bool) or not isinstance(self.scale, int | float):
            raise TypeError(f"scale must be a float, got {type(self.scale).__name__}.")
        if not math.isfinite(self.scale):
            raise ValueError(f"scale must be finite, got {self.scale}.")
        self.scale = float(self.scale)
        if self.scale_mode not in SCALE_MODES:
            raise ValueError(
                f"scale_mode must be 'absolute' or 'relative', got {self.scale_mode!r}."
            )
        if self.reference_norm is not None:
            value = self.reference_norm
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"reference_norm must be a float, got {type(value).__name__}.")
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"reference_norm must be positive and finite, got {value}.")
            self.reference_norm = float(value)
        if isinstance(self.t_start, bool) or not isinstance(self.t_start, int | float):
            raise TypeError(f"t_start must be a float, got {type(self.t_start).__name__}.")
        if not 0.0 < self.t_start <= 1.0:
            raise ValueError(
                f"t_start must be in (0, 1] (0 = clean, 1 = pure noise), got {self.t_start}."
            )
        self.t_start = float(self.t_start)
        if isinstance(self.num_steps, bool) or not isinstance(self.num_steps, int):
            raise TypeError(f"num_steps must be an int, got {type(self.num_steps).__name__}.")
        if self.num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {self.num_steps}.")
        if self.positions not in POSITIONS:
            raise ValueError(f"positions must be one of {POSITIONS}, got {self.positions!r}.")
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
