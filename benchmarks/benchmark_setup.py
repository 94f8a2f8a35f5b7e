"""Set-up shared by the benchmark scripts: the default model and captured train/held-out rows."""

from __future__ import annotations

import argparse
from dataclasses import replace
from typing import Any

from tl_diffusion_prior.data import load_default_model
from tl_diffusion_prior.recipes import SCALES, DemoScale, capture_corpus


def add_data_arguments(parser: argparse.ArgumentParser, n_train: int, n_val: int) -> None:
    parser.add_argument("--n-train", type=int, default=n_train, help="training activations")
    parser.add_argument("--n-val", type=int, default=n_val, help="held-out activations")
    parser.add_argument("--device", default=None)


def model_and_activations(args: argparse.Namespace, **scale_fields: Any):
    """The default model, the demo's default scale with ``scale_fields`` and ``--n-train`` /
    ``--n-val`` applied, a training buffer and the held-out rows (float32)."""
    scale: DemoScale = replace(
        SCALES["default"], n_train=args.n_train, n_val=args.n_val, **scale_fields
    )
    model = load_default_model(device=args.device)
    buffer, _, _ = capture_corpus(model, "train", scale.n_train, scale.ctx)
    val_buffer, _, _ = capture_corpus(model, "heldout", scale.n_val, scale.ctx)
    return model, scale, buffer, val_buffer.filled_rows(0).float()
