"""The default model as a TransformerBridge, offline.

``transformers`` reads the same GGUF as :mod:`tl_diffusion_prior.data.gguf` (its own
dequantisation, independent of ours) into a Hugging Face ``LlamaForCausalLM``, which gets the
HookedTransformer's tokenizer. The first load saves both with ``save_pretrained`` beside the
HookedTransformer's conversion cache, so later loads skip the GGUF. The bridge wraps that model: no
hub is contacted. Its ``blocks.L.hook_resid_post`` activations and next-token logits match the
HookedTransformer's within float32 tolerance (``tests/bridge/test_default_bridge.py``,
``benchmarks/bridge_equivalence.py``)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from tl_diffusion_prior.constants import CONVERSION_RECORD_NAME, DEFAULT_MODEL_NAME
from tl_diffusion_prior.core import lens
from tl_diffusion_prior.core.lens import LensModel, check_model_kind
from tl_diffusion_prior.core.serialization import atomic_directory, atomic_write_json, read_json
from tl_diffusion_prior.data import gguf

logger = logging.getLogger(__name__)

# Part of the cache key: bump whenever what the conversion writes changes.
BRIDGE_CONVERSION_VERSION = 2
# Beside the HookedTransformer's cache folder: ``<that folder>-hf``.
HF_FOLDER_SUFFIX = "-hf"


def bridge_model_folder(cache_dir: str | os.PathLike | None = None) -> Path:
    """The folder holding the default model in Hugging Face format; converts the GGUF into it
    first if it is missing or stale (~15 s on 2 CPU cores, once)."""
    gguf_path = gguf.find_default_gguf()
    base = gguf.model_cache_dir(gguf_path, cache_dir)
    folder = base.with_name(base.name + HF_FOLDER_SUFFIX)
    expected = {
        "conversion_version": BRIDGE_CONVERSION_VERSION,
        "model_name": DEFAULT_MODEL_NAME,
        "gguf_file": gguf_path.name,
        "gguf_size": gguf_path.stat().st_size,
    }
    if not _cache_is_valid(folder, expected):
        _write_cache(folder, gguf_path, expected)
    return folder


def _cache_is_valid(folder: Path, expected: dict) -> bool:
    try:
        return read_json(folder / CONVERSION_RECORD_NAME) == expected
    except (OSError, ValueError):
        return False


def _write_cache(folder: Path, gguf_path: Path, record: dict) -> None:
    from gguf import GGUFReader
    from transformers import AutoModelForCausalLM

    logger.info("Converting %s into %s with transformers (done once)", gguf_path, folder)
    dequantised = AutoModelForCausalLM.from_pretrained(
        str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32
    )
    # The HookedTransformer's tokenizer, not transformers' GGUF one: that lacks SmolLM2's
    # digit-splitting pre-tokenizer step ("x  123" -> "x", "Ġ", "Ġ", ... instead of "ĠĠ").
    tokenizer = gguf.build_tokenizer(GGUFReader(str(gguf_path)), n_ctx=gguf.DEFAULT_N_CTX)
    # The loaded model still counts as GGUF-quantised, which save_pretrained refuses; its weights
    # are plain float32 tensors, so move them into an unquantised model of the same config.
    config = dequantised.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(dequantised.state_dict(), strict=True)
    with atomic_directory(folder) as tmp:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        # Written last, and checked on load: it says what the folder was converted from.
        atomic_write_json(tmp / CONVERSION_RECORD_NAME, record)


def load_default_bridge(
    device: torch.device,
    dtype: torch.dtype,
    cache_dir: str | os.PathLike | None = None,
) -> LensModel:
    """SmolLM2-135M-Instruct as an eval-mode ``TransformerBridge`` on ``device`` in ``dtype``.

    Raw Hugging Face numerics (no ``enable_compatibility_mode()``: the HookedTransformer of
    :func:`~tl_diffusion_prior.data.models.load_default_model` folds nothing either, so the two
    agree). ``cfg.model_name`` is ``SmolLM2-135M-Instruct``, as for the HookedTransformer.
    """
    check_model_kind("bridge")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = str(bridge_model_folder(cache_dir))
    hf_model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    bridge = lens.TransformerBridge.boot_transformers(
        DEFAULT_MODEL_NAME, hf_model=hf_model.to(device), tokenizer=tokenizer, device=str(device)
    )
    bridge.eval()
    return bridge
