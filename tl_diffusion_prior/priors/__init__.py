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
from tl_diffusion_prior.priors.default_prior import (
    DEFAULT_PRIOR_NAME,
    load_default_prior,
    resolve_prior_dir,
)
from tl_diffusion_prior.priors.mlp import MLPPrior, MLPPriorConfig
from tl_diffusion_prior.priors.unet import UNetPrior
from tl_diffusion_prior.priors.unet_config import UNetPriorConfig

__all__ = [
    "DEFAULT_PRIOR_NAME",
    "PRIOR_REGISTRY",
    "DiffusionPrior",
    "MLPPrior",
    "MLPPriorConfig",
    "PriorConfig",
    "UNetPrior",
    "UNetPriorConfig",
    "load_default_prior",
    "load_prior",
    "register_prior",
    "resolve_prior_dir",
]
