"""Stage 4: train a diffusion prior on a ring buffer, with exact resume and checkpoints."""

from tl_diffusion_prior.training.config import TrainConfig, get_lr
from tl_diffusion_prior.training.loss_curve import NonFiniteLossError
from tl_diffusion_prior.training.trainer import TrainResult, train_prior

__all__ = ["NonFiniteLossError", "TrainConfig", "TrainResult", "get_lr", "train_prior"]
