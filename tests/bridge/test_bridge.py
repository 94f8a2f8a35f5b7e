"""The plugin on a TransformerBridge, on every TransformerLens version that has one.

The rest of the suite runs on whichever kind the installed TransformerLens defaults to (see
``tests/lens_kinds.py``); these tests build bridges explicitly, so they also run beside the
HookedTransformer on TransformerLens 3.9, where the two kinds can be compared.
"""

from __future__ import annotations

import pytest
import torch

from tests.lens_kinds import build_tiny_bridge
from tests.steering.helpers import RecordingPrior, greedy
from tl_diffusion_prior.capture import ActivationRingBuffer, CaptureConfig, fill_buffer
from tl_diffusion_prior.core import lens
from tl_diffusion_prior.steering import steer, steering_vector

pytestmark = pytest.mark.skipif(lens.TransformerBridge is None, reason="no TransformerBridge")

HOOK = "blocks.1.hook_resid_post"
CANONICAL = "blocks.1.hook_out"


@pytest.fixture
def bridge():
    model = build_tiny_bridge()
    model.tokenizer.padding_side = "left"
    return model


def _tokens(batch=2, length=6, seed=0):
    return torch.randint(4, 99, (batch, length), generator=torch.Generator().manual_seed(seed))


def test_model_kind_and_refusal_of_other_models(bridge):
    assert lens.model_kind(bridge) == "bridge"
    with pytest.raises(TypeError, match="TransformerBridge.*got Linear"):
        lens.model_kind(torch.nn.Linear(2, 2))
    with pytest.raises(TypeError, match="TransformerBridge"):
        with steer(torch.nn.Linear(2, 2), HOOK, torch.ones(64), 1.0):
            pass
    with pytest.raises(ValueError, match="model kind must be one of"):
        lens.check_model_kind("hooked-ish")


def test_unknown_hook_name_lists_close_valid_names(bridge):
    with pytest.raises(ValueError, match=r"Did you mean.*blocks\.1\.hook_resid_post"):
        fill_buffer(bridge, _tokens(), "blocks.1.hook_resid_pots", 5, progress=False)
    with pytest.raises(ValueError, match="attention probabilities"):
        with steer(bridge, "blocks.1.attn.hook_pattern", torch.ones(64), 1.0):
            pass


@pytest.mark.parametrize("hook", [HOOK, CANONICAL])
def test_capture_matches_run_with_cache_under_both_names(bridge, hook):
    tokens = _tokens(2, 6)
    buffer = ActivationRingBuffer(100, 64, [hook])
    config = CaptureConfig(outlier_multiple=None)
    fill_buffer(bridge, tokens, hook, 10, buffer=buffer, config=config, progress=False)
    _, cache = bridge.run_with_cache(tokens, names_filter=[hook])
    expected = cache[hook][:, 1:].reshape(-1, 64)  # position 0 is never captured
    torch.testing.assert_close(buffer.data[: buffer.num_pushed, 0], expected)


def test_steering_adds_r_times_reference_norm_and_hook_points_are_visible(bridge):
    tokens = _tokens(1, 5)
    vector = torch.randn(64)
    _, clean = bridge.run_with_cache(tokens, names_filter=[HOOK])
    with steer(bridge, HOOK, vector, 0.5, scale_mode="relative", reference_norm=8.0) as handle:
        assert f"{HOOK}.hook_steered" in bridge.hook_dict
        _, cache = bridge.run_with_cache(tokens, names_filter=[HOOK, handle.steered_hook_name])
    added = cache[handle.steered_hook_name][0, 1:] - clean[HOOK][0, 1:]
    torch.testing.assert_close(added.norm(dim=-1), torch.full((4,), 4.0))
    assert f"{HOOK}.hook_steered" not in bridge.hook_dict


def test_steered_generation_with_a_prior_is_the_same_with_and_without_the_kv_cache(bridge):
    prior = RecordingPrior(64, HOOK, bridge.cfg.model_name, noise_scale=1.0)
    tokens = _tokens(2, 5)
    outputs = []
    for use_cache in (True, False):
        with steer(bridge, HOOK, torch.randn(64, generator=torch.Generator()), 3.0, prior, seed=2):
            outputs.append(greedy(bridge, tokens, 5, use_cache))
    assert torch.equal(outputs[0], outputs[1])
    # The cached decode steps really read the cache (an empty one would also agree with itself).
    assert torch.equal(greedy(bridge, tokens, 5, True), greedy(bridge, tokens, 5, False))


def test_left_padded_row_equals_its_prompt_alone_when_steered(bridge):
    prior = RecordingPrior(64, HOOK, bridge.cfg.model_name, noise_scale=1.0)
    short, long = _tokens(1, 3, seed=1)[0], _tokens(1, 6, seed=2)[0]
    batch = torch.zeros(2, 6, dtype=torch.long)
    batch[0], batch[1, 3:] = long, short
    vector = torch.randn(64, generator=torch.Generator().manual_seed(3))
    with steer(bridge, HOOK, vector, 3.0, prior, seed=5):
        together = greedy(bridge, batch, 5, padding_side="left")
        alone = greedy(bridge, short[None], 5)
    assert torch.equal(together[1, 3:], alone[0])


def test_hooks_are_removed_after_an_exception_inside_generate(bridge):
    before = {name: len(point.fwd_hooks) for name, point in bridge.hook_dict.items()}
    failing = RecordingPrior(64, HOOK, bridge.cfg.model_name, fail=True)
    with pytest.raises(RuntimeError, match="prior failure"):
        with steer(bridge, HOOK, torch.randn(64), 1.0, failing, seed=0):
            greedy(bridge, _tokens(1, 4), 5)
    after = {name: len(point.fwd_hooks) for name, point in bridge.hook_dict.items()}
    assert after == before
    assert not any(block._forward_pre_hooks for block in bridge.blocks)
    assert not {"generate", "generate_stream"} & set(bridge.__dict__)


def test_steering_vector_is_the_difference_of_mean_activations(bridge):
    positive, negative = ["happy day", "joy"], ["sad day", "grief"]
    vector = steering_vector(bridge, HOOK, positive, negative, reduce="last", outlier_multiple=None)
    means = []
    for prompts in (positive, negative):
        rows = []
        for prompt in prompts:
            _, cache = bridge.run_with_cache(bridge.to_tokens(prompt), names_filter=[HOOK])
            rows.append(cache[HOOK][0, -1])
        means.append(torch.stack(rows).mean(0))
    torch.testing.assert_close(vector, means[0] - means[1])


@pytest.mark.parametrize("hook", [HOOK, "blocks.1.hook_resid_pre", "blocks.1.hook_resid_mid"])
def test_delta_lm_patching_splits_the_forward_at_the_hook(bridge, hook):
    from tl_diffusion_prior.evaluate.fidelity import TokenSet, prepare_clean_pass

    tokens = _tokens(3, 8, seed=4)
    token_set = TokenSet("tiny", tokens, torch.arange(3))
    clean = prepare_clean_pass(bridge, token_set, hook, batch_size=2, outlier_multiple=None)
    with torch.inference_mode():
        expected = bridge(tokens, return_type="loss", loss_per_token=True)
        _, cache = bridge.run_with_cache(tokens, names_filter=[hook])
    torch.testing.assert_close(clean.clean_loss, expected.float())
    torch.testing.assert_close(clean.resid, cache[hook].float())
