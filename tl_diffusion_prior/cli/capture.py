"""``tl-diffusion-prior capture``: fill a ring buffer from text and save it."""

from __future__ import annotations

import argparse
import time

import torch

from tl_diffusion_prior.capture import (
    ActivationCapture,
    ActivationRingBuffer,
    CaptureConfig,
    fill_buffer,
    model_device,
)
from tl_diffusion_prior.cli.common import build_token_source, describe_capture, is_buffer_file
from tl_diffusion_prior.constants import DEFAULT_HOOK
from tl_diffusion_prior.core.paths import check_output_file
from tl_diffusion_prior.core.resources import check_fits_on_disk
from tl_diffusion_prior.data import models


def run_capture(args: argparse.Namespace) -> int:
    """Run ``tl-diffusion-prior capture`` with parsed ``args``."""
    # Before the model loads: a bad --out must not cost a whole capture.
    check_output_file(
        args.out,
        overwrite=args.overwrite,
        what="--out (the buffer file)",
        is_ours=is_buffer_file,
    )
    model = models.load_model(args.model, device=args.device, kind=args.model_kind)
    hooks = args.hook or [DEFAULT_HOOK]
    source = build_token_source(args, model.tokenizer)
    buffer = ActivationRingBuffer(
        args.n_activations,
        model.cfg.d_model,
        hooks,
        device=model_device(model),
        dtype=getattr(torch, args.dtype),
    )
    # The saved file is about the size of the storage: refuse a disk too small before capturing.
    check_fits_on_disk(
        buffer.data.nbytes,
        args.out,
        "--out (the buffer file)",
        "free space or lower --n-activations",
    )
    capture = ActivationCapture(
        model, hooks, buffer, CaptureConfig(outlier_multiple=args.outlier_multiple)
    )
    start = time.perf_counter()
    fill_buffer(model, source, hooks, args.n_activations, buffer=buffer, capture=capture)
    elapsed = time.perf_counter() - start
    print(describe_capture(capture, elapsed))
    buffer.save(args.out)
    print(f"buffer written to {args.out}")
    return 0
