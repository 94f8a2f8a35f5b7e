"""The default model as a TransformerBridge: the same activations and logits as the
HookedTransformer, and a prior trained on one steers the other the same way."""

from __future__ import annotations

import pytest
import torch

from tests.lens_kinds import needs_hooked_transformer
from tl_diffusion_prior.core import lens
from tl_diffusion_prior.core.fingerprint import model_fingerprint
from tl_diffusion_prior.data.models import load_default_model
from tl_diffusion_prior.priors import load_default_prior
from tl_diffusion_prior.steering import steer, steering_vector

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(lens.TransformerBridge is None, reason="no TransformerBridge"),
]

HOOK = "blocks.15.hook_resid_post"
PROMPTS = ["The weather today is", "My favourite food is a bowl of", "Order 66 shipped  12,345"]
GENERATE = dict(max_new_tokens=12, do_sample=False, stop_at_eos=False, verbose=False)


@pytest.fixture(scope="module")
def bridge():
    return load_default_model(kind="bridge")


@pytest.fixture(scope="module")
def hooked():
    if not lens.has_hooked_transformer():
        pytest.skip("TransformerLens 4 has no HookedTransformer")
    return load_default_model(kind="hooked")


def _steered_texts(model, prior, use_cache=True):
    vector = steering_vector(model, HOOK, ["I love this, wonderful"], ["I hate this, awful"])
    with steer(model, HOOK, vector, 0.5, prior, scale_mode="relative", seed=0):
        return [model.generate(p, use_past_kv_cache=use_cache, **GENERATE) for p in PROMPTS]


def test_bridge_loads_offline_with_the_same_name_and_tokens(bridge):
    assert lens.model_kind(bridge) == "bridge"
    assert bridge.cfg.model_name == "SmolLM2-135M-Instruct" and bridge.cfg.d_model == 576
    assert bridge.to_tokens("Hello world")[0, 0].item() == 1  # <|im_start|> prepended


def test_bridge_steers_with_the_shipped_prior_identically_with_and_without_the_cache(bridge):
    prior = load_default_prior()
    assert _steered_texts(bridge, prior, True) == _steered_texts(bridge, prior, False)


@needs_hooked_transformer
def test_bridge_and_hooked_transformer_agree(bridge, hooked):
    tokens = hooked.to_tokens(PROMPTS, padding_side="right")
    assert torch.equal(bridge.to_tokens(PROMPTS, padding_side="right"), tokens)
    with torch.inference_mode():
        hooked_logits, hooked_cache = hooked.run_with_cache(tokens, names_filter=[HOOK])
        bridge_logits, bridge_cache = bridge.run_with_cache(tokens, names_filter=[HOOK])
    act, other = hooked_cache[HOOK], bridge_cache[HOOK]
    # fp32, two independent dequantisations of the same 4-bit weights; the massive activation
    # dimensions reach ~2.5e4, where one float32 ulp is 2e-3.
    assert ((act - other).norm() / act.norm()).item() < 1e-5
    assert (act - other)[:, 1:].abs().max().item() < 1e-2  # away from position 0's huge norms
    assert (hooked_logits - bridge_logits).abs().max().item() < 1e-3
    assert torch.equal(hooked_logits[:, -1].argmax(-1), bridge_logits[:, -1].argmax(-1))
    assert model_fingerprint(bridge) == model_fingerprint(hooked)


@needs_hooked_transformer
def test_a_prior_trained_on_the_hooked_transformer_steers_the_bridge_the_same(bridge, hooked):
    prior = load_default_prior()  # trained on HookedTransformer activations
    assert _steered_texts(bridge, prior) == _steered_texts(hooked, prior)


def test_bridge_cache_is_written_once_offline_and_holds_no_pickle(tmp_path, monkeypatch):
    from tl_diffusion_prior.constants import CONVERSION_RECORD_NAME
    from tl_diffusion_prior.data.bridge_model import bridge_model_folder

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = bridge_model_folder(tmp_path)
    files = {p.name for p in folder.iterdir()}
    assert {CONVERSION_RECORD_NAME, "config.json", "model.safetensors", "tokenizer.json"} <= files
    assert not any(p.suffix in {".pt", ".pth", ".bin", ".pkl"} for p in folder.rglob("*"))
    mtime = (folder / "model.safetensors").stat().st_mtime_ns
    assert bridge_model_folder(tmp_path) == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == mtime  # read, not rewritten
    (folder / CONVERSION_RECORD_NAME).write_text('{"conversion_version": -1}')
    bridge_model_folder(tmp_path)  # a stale record is rebuilt
    assert (folder / "model.safetensors").stat().st_mtime_ns != mtime
