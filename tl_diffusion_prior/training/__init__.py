"""Stage 4: train a diffusion prior on a ring buffer, with exact resume and checkpoints."""

from tl_diffusion_prior.training.config import TrainConfig, get_lr
from tl_diffusion_prior.training.monitor import NonFiniteLossError
from tl_diffusion_prior.training.result import TrainResult
from tl_diffusion_prior.training.trainer import FIT_ROWS, train_prior

__all__ = ["FIT_ROWS", "NonFiniteLossError", "TrainConfig", "TrainResult", "get_lr", "train_prior"]
