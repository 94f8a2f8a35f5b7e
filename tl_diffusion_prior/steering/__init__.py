"""Stage 5: steering vectors, hooks that add them and denoise with a prior, and the monitor."""

from tl_diffusion_prior.steering.config import (
    SteeringConfig,
    added_vector,
    reference_norm_from_prior,
)
from tl_diffusion_prior.steering.monitor import (
    SCORE_HOOK,
    STEERED_SCORE_HOOK,
    MonitorHandle,
    attach_monitor,
    monitor,
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
    "SCORE_HOOK",
    "STEERED_SCORE_HOOK",
    "STEERED_HOOK",
    "MonitorHandle",
    "SteeringConfig",
    "SteeringHandle",
    "added_vector",
    "attach_monitor",
    "attach_steering",
    "mean_activation_norm",
    "monitor",
    "prompt_tokens",
    "reference_norm_from_prior",
    "steer",
    "steering_suspended",
    "steering_vector",
]
