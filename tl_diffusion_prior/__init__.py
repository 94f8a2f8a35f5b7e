"""Diffusion priors over TransformerLens activations: capture, train, steer, evaluate."""

from tl_diffusion_prior.capture.buffer import ActivationRingBuffer
from tl_diffusion_prior.capture.capture import ActivationCapture, CaptureConfig, fill_buffer
from tl_diffusion_prior.data.corpus import load_corpus, out_of_domain_texts
from tl_diffusion_prior.data.models import load_default_model, load_model
from tl_diffusion_prior.data.sources import (
    corpus_token_source,
    hf_dataset_token_source,
    text_file_token_source,
)
from tl_diffusion_prior.priors import (
    DiffusionPrior,
    MLPPrior,
    MLPPriorConfig,
    UNetPrior,
    UNetPriorConfig,
    load_prior,
)
from tl_diffusion_prior.steering.steer import attach_steering, steer
from tl_diffusion_prior.steering.vector import mean_activation_norm, steering_vector
from tl_diffusion_prior.training.trainer import TrainConfig, TrainResult, train_prior

__version__ = "0.1.0"

__all__ = [
    "ActivationCapture",
    "ActivationRingBuffer",
    "CaptureConfig",
    "DiffusionPrior",
    "MLPPrior",
    "MLPPriorConfig",
    "TrainConfig",
    "TrainResult",
    "UNetPrior",
    "UNetPriorConfig",
    "attach_steering",
    "corpus_token_source",
    "fill_buffer",
    "hf_dataset_token_source",
    "load_corpus",
    "load_default_model",
    "load_model",
    "load_prior",
    "mean_activation_norm",
    "out_of_domain_texts",
    "steer",
    "steering_vector",
    "text_file_token_source",
    "train_prior",
]
