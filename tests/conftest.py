import random

import numpy as np
import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig


@pytest.fixture(autouse=True)
def _seed_everything():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


def build_tiny_model(**overrides) -> HookedTransformer:
    cfg = dict(
        n_layers=2,
        d_model=64,
        d_head=16,
        n_heads=4,
        d_mlp=128,
        d_vocab=300,
        n_ctx=64,
        act_fn="silu",
        normalization_type="RMS",
        positional_embedding_type="rotary",
        gated_mlp=True,
        seed=0,
        default_prepend_bos=False,
    )
    cfg.update(overrides)
    model = HookedTransformer(HookedTransformerConfig(**cfg))
    model.eval()
    return model


@pytest.fixture
def tiny_model() -> HookedTransformer:
    return build_tiny_model()


@pytest.fixture(scope="session")
def default_model():
    from tl_diffusion_prior.data.models import load_default_model

    return load_default_model()
