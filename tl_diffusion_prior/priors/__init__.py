"""Diffusion priors over single activation vectors: the shared interface and the two designs.

Importing this package registers every built-in design in ``PRIOR_REGISTRY``.
"""

from tl_diffusion_prior.priors.base import (
    PRIOR_REGISTRY,
    DiffusionPrior,
    PriorConfig,
    load_prior,
    register_prior,
)
from tl_diffusion_prior.priors.mlp import MLPPrior, MLPPriorConfig
from tl_diffusion_prior.priors.unet import UNetPrior
from tl_diffusion_prior.priors.unet_config import UNetPriorConfig

__all__ = [
    "PRIOR_REGISTRY",
    "DiffusionPrior",
    "MLPPrior",
    "MLPPriorConfig",
    "PriorConfig",
    "UNetPrior",
    "UNetPriorConfig",
    "load_prior",
    "register_prior",
]
