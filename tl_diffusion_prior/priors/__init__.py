"""Diffusion priors over single activation vectors: the shared interface and the designs.

Importing this package registers every built-in design in ``PRIOR_REGISTRY``: ``mlp``, ``unet``
and ``glp`` (the paper's released checkpoints). :func:`load_prior` reads a folder or a Hugging Face
Hub name, in this package's format or the paper's.
"""

from tl_diffusion_prior.priors.base import (
    PRIOR_REGISTRY,
    DiffusionPrior,
    PriorConfig,
    register_prior,
)
from tl_diffusion_prior.priors.default_prior import (
    DEFAULT_PRIOR_NAME,
    load_default_prior,
    resolve_prior_dir,
)
from tl_diffusion_prior.priors.glp import GLPPrior, GLPPriorConfig, paper_steering_schedule
from tl_diffusion_prior.priors.glp_format import load_glp_checkpoint
from tl_diffusion_prior.priors.loading import load_prior
from tl_diffusion_prior.priors.mlp import MLPPrior, MLPPriorConfig
from tl_diffusion_prior.priors.multi_layer import glp_prior_for_hooks
from tl_diffusion_prior.priors.unet import UNetPrior
from tl_diffusion_prior.priors.unet_config import UNetPriorConfig

__all__ = [
    "DEFAULT_PRIOR_NAME",
    "PRIOR_REGISTRY",
    "DiffusionPrior",
    "GLPPrior",
    "GLPPriorConfig",
    "MLPPrior",
    "MLPPriorConfig",
    "PriorConfig",
    "UNetPrior",
    "UNetPriorConfig",
    "glp_prior_for_hooks",
    "load_default_prior",
    "load_glp_checkpoint",
    "load_prior",
    "paper_steering_schedule",
    "register_prior",
    "resolve_prior_dir",
]
