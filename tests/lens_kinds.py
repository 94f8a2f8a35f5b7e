"""Tiny test models of either kind, and the kind the suite runs on.

The suite runs on a ``HookedTransformer`` where TransformerLens has one (3.x) and on a
``TransformerBridge`` otherwise (4.x); ``TDP_TEST_MODEL_KIND=bridge`` forces the bridge on 3.x.
Tests of HookedTransformer internals carry ``@hooked_only``. ``tests/bridge`` tests the bridge on
every version.
"""

from __future__ import annotations

import os

import pytest
import torch

from tl_diffusion_prior.core import lens

MODEL_KIND = lens.check_model_kind(os.environ.get("TDP_TEST_MODEL_KIND") or None)

hooked_only = pytest.mark.skipif(
    MODEL_KIND != "hooked", reason="tests HookedTransformer internals; the suite runs on a bridge"
)
needs_hooked_transformer = pytest.mark.skipif(
    not lens.has_hooked_transformer(), reason="TransformerLens 4 has no HookedTransformer"
)

TINY_DEFAULTS = dict(
    n_layers=2,
    d_model=64,
    d_head=16,
    n_heads=4,
    d_mlp=128,
    d_vocab=300,
    n_ctx=64,
    seed=0,
    default_prepend_bos=False,
)


def build_tiny_hooked(**overrides):
    cfg = dict(
        TINY_DEFAULTS,
        act_fn="silu",
        normalization_type="RMS",
        positional_embedding_type="rotary",
        gated_mlp=True,
    )
    cfg.update(overrides)
    model = lens.HookedTransformer(lens.HookedTransformerConfig(**cfg))
    model.eval()
    return model


def tiny_tokenizer():
    """A character-level tokenizer (printable ASCII + 4 specials, 99 ids), built in memory.

    ``add_bos_token=True`` matters: without it TransformerLens reloads the tokenizer from its
    ``name_or_path`` to add BOS, which fails for one that exists only in memory."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<bos>", "<eos>", "<unk>"]
    vocab = {token: i for i, token in enumerate(specials + [chr(c) for c in range(32, 127)])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        add_bos_token=True,
        name_or_path="tiny-char",
    )


def build_tiny_bridge(**overrides):
    """A randomly initialised Llama of the tiny sizes, wrapped in a TransformerBridge."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = dict(TINY_DEFAULTS, **overrides)
    unknown = set(cfg) - set(TINY_DEFAULTS)
    if unknown:
        pytest.skip(f"no bridge equivalent of the HookedTransformer options {sorted(unknown)}")
    torch.manual_seed(cfg["seed"])
    hf_config = LlamaConfig(
        vocab_size=cfg["d_vocab"],
        hidden_size=cfg["d_model"],
        intermediate_size=cfg["d_mlp"],
        num_hidden_layers=cfg["n_layers"],
        num_attention_heads=cfg["n_heads"],
        num_key_value_heads=cfg["n_heads"],
        head_dim=cfg["d_head"],
        max_position_embeddings=cfg["n_ctx"],
        tie_word_embeddings=True,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    hf_model = LlamaForCausalLM(hf_config).eval()
    bridge = lens.TransformerBridge.boot_transformers(
        "tiny-llama", hf_model=hf_model, tokenizer=tiny_tokenizer(), device="cpu"
    )
    bridge.cfg.default_prepend_bos = cfg["default_prepend_bos"]
    bridge.cfg.model_name = "custom"  # a HookedTransformer built from a config is named so
    bridge.eval()
    return bridge


def build_tiny_model(kind: str | None = None, **overrides):
    """A tiny model of ``kind`` (default: the suite's :data:`MODEL_KIND`)."""
    if (kind or MODEL_KIND) == "bridge":
        return build_tiny_bridge(**overrides)
    return build_tiny_hooked(**overrides)
