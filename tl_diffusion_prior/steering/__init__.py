"""Stage 5: steering vectors, and hooks that add them and denoise with a prior."""

from tl_diffusion_prior.steering.config import (
    SteeringConfig,
    added_vector,
    reference_norm_from_prior,
)
from tl_diffusion_prior.steering.positions import steering_suspended
from tl_diffusion_prior.steering.steer import (
    DENOISED_HOOK,
    STEERED_HOOK,
    SteeringHandle,
    attach_steering,
    steer,
)
from tl_diffusion_prior.steering.vector import mean_activation_norm, prompt_tokens, steering_vector

__all__ = [
    "DENOISED_HOOK",
    "STEERED_HOOK",
    "SteeringConfig",
    "SteeringHandle",
    "added_vector",
    "attach_steering",
    "mean_activation_norm",
    "prompt_tokens",
    "reference_norm_from_prior",
    "steer",
    "steering_suspended",
    "steering_vector",
]
