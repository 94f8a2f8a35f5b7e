"""Diffusion priors over TransformerLens activations: capture, train, steer, evaluate.

The stages are subpackages, each importing only those before it: ``core`` (building blocks),
``data`` (text and the source model), ``capture`` (hook points into a ring buffer), ``priors``,
``training``, ``steering``, ``evaluate``; ``recipes`` holds what the demo, tutorials and benchmarks
share, and ``cli`` the command line. The names below are the public API.
"""

from importlib.metadata import PackageNotFoundError, version

from tl_diffusion_prior.capture import (
    ActivationCapture,
    ActivationRingBuffer,
    CaptureConfig,
    fill_buffer,
)
from tl_diffusion_prior.data import (
    TextTokenSource,
    corpus_token_source,
    hf_dataset_token_source,
    load_corpus,
    load_default_model,
    load_model,
    out_of_domain_sets,
    out_of_domain_texts,
    text_file_token_source,
)
from tl_diffusion_prior.evaluate.settings import EvalSettings
from tl_diffusion_prior.priors import (
    DiffusionPrior,
    MLPPrior,
    MLPPriorConfig,
    UNetPrior,
    UNetPriorConfig,
    load_default_prior,
    load_prior,
)
from tl_diffusion_prior.priors.score import ScoreConfig
from tl_diffusion_prior.steering import (
    MonitorHandle,
    SteeringConfig,
    attach_monitor,
    attach_steering,
    mean_activation_norm,
    monitor,
    reference_norm_from_prior,
    steer,
    steering_vector,
)
from tl_diffusion_prior.training import TrainConfig, TrainResult, train_prior

try:
    __version__ = version("tl-diffusion-prior")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "ActivationCapture",
    "ActivationRingBuffer",
    "CaptureConfig",
    "DiffusionPrior",
    "EvalSettings",
    "MLPPrior",
    "MLPPriorConfig",
    "MonitorHandle",
    "ScoreConfig",
    "SteeringConfig",
    "TextTokenSource",
    "TrainConfig",
    "TrainResult",
    "UNetPrior",
    "UNetPriorConfig",
    "attach_monitor",
    "attach_steering",
    "corpus_token_source",
    "fill_buffer",
    "hf_dataset_token_source",
    "load_corpus",
    "load_default_model",
    "load_default_prior",
    "load_model",
    "load_prior",
    "mean_activation_norm",
    "monitor",
    "reference_norm_from_prior",
    "out_of_domain_sets",
    "out_of_domain_texts",
    "steer",
    "steering_vector",
    "text_file_token_source",
    "train_prior",
]
