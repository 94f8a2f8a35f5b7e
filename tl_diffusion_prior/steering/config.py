"""The settings of a steering (:class:`SteeringConfig`) and reference norms for relative scales."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from tl_diffusion_prior.core.config import ConfigBase
from tl_diffusion_prior.core.validation import check_choice, check_float, check_int
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
