"""Stages 1-2: TransformerLens hook points stream activations into a ring buffer on the device."""

from tl_diffusion_prior.capture.buffer import ActivationRingBuffer
from tl_diffusion_prior.capture.capture import (
    ActivationCapture,
    CaptureConfig,
    CaptureStats,
    fill_buffer,
    model_device,
)
from tl_diffusion_prior.capture.hook_names import layer_of, stop_at_layer, validate_hook_names
from tl_diffusion_prior.capture.refill import BufferRefill, make_refill

__all__ = [
    "ActivationCapture",
    "ActivationRingBuffer",
    "BufferRefill",
    "CaptureConfig",
    "CaptureStats",
    "fill_buffer",
    "layer_of",
    "make_refill",
    "model_device",
    "stop_at_layer",
    "validate_hook_names",
]
