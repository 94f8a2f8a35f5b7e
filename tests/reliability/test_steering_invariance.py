"""Issue 12, case 5: steering with a prior is batch-invariant and padding-invariant.

The denoising noise used to be keyed on the row's index in the batch and on positions that count
left padding, so the same prompt twice in one batch got two continuations and no row of a padded
batch matched its prompt alone. These tests run a tiny model with a tiny MLP prior and compare
each row with the same prompt run alone, with and without the KV cache.
"""

from __future__ import annotations

import types

import pytest
import torch

from tests.lens_kinds import MODEL_KIND, build_tiny_model
from tests.priors.helpers import build_tiny_prior, randomize_
from tl_diffusion_prior.steering import steer

HOOK = "blocks.0.hook_resid_post"
PAD = 0
NEW_TOKENS = 6


@pytest.fixture
def model():
    model = build_tiny_model()
    if MODEL_KIND == "bridge":  # its tokenizer has these ids already (and must be a real one)
        model.tokenizer.padding_side = "left"
        return model
    # generate() builds its attention mask from the tokenizer's pad id and padding side; these are
    # all it reads from a tokenizer when given token ids and stop_at_eos=False.
    model.tokenizer = types.SimpleNamespace(
        pad_token_id=PAD, bos_token_id=1, eos_token_id=2, padding_side="left"
    )
    return model


@pytest.fixture
def prior(model):
    prior = build_tiny_prior("mlp", d_model=64, hook_name=HOOK, model_name=model.cfg.model_name)
    return randomize_(prior, scale=0.05)


def _prompts(*lengths: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(sum(lengths))
    return [torch.randint(3, 300, (n,), generator=gen) for n in lengths]


def _left_pad(prompts: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in prompts)
    tokens = torch.full((len(prompts), width), PAD, dtype=torch.long)
    mask = torch.zeros_like(tokens)
    for row, prompt in enumerate(prompts):
        tokens[row, width - len(prompt) :] = prompt
        mask[row, width - len(prompt) :] = 1
    return tokens, mask


def _steer(model, prior, seed=7):
    vector = torch.randn(64, generator=torch.Generator().manual_seed(1))
    return steer(model, HOOK, vector, 3.0, prior, num_steps=3, seed=seed)


def _greedy(model, tokens, use_cache):
    # A bridge reads padding off token ids only when told the side (else pads count as tokens);
    # a HookedTransformer reads it off the tokenizer's padding_side.
    padding = {"padding_side": "left"} if MODEL_KIND == "bridge" else {}
    return model.generate(
        tokens,
        max_new_tokens=NEW_TOKENS,
        do_sample=False,
        stop_at_eos=False,
        verbose=False,
        use_past_kv_cache=use_cache,
        **padding,
    )


@pytest.mark.parametrize("use_cache", [True, False])
def test_the_same_prompt_twice_in_one_batch_gives_identical_rows(model, prior, use_cache):
    (prompt,) = _prompts(6)
    with _steer(model, prior):
        alone = model(prompt[None])
        logits = model(prompt.expand(2, -1))
        out = _greedy(model, prompt.expand(2, -1), use_cache)
    # The prior's matmuls may round rows of one batch differently (a last-bit effect of the BLAS
    # kernels, not of the steering), so logits are compared to float32 precision.
    torch.testing.assert_close(logits[0], logits[1])
    torch.testing.assert_close(logits[0], alone[0])
    assert torch.equal(out[0], out[1])


@pytest.mark.parametrize("use_cache", [True, False])
def test_each_row_of_a_left_padded_batch_equals_its_prompt_alone(model, prior, use_cache):
    prompts = _prompts(4, 7, 5)
    tokens, mask = _left_pad(prompts)
    width = tokens.shape[1]
    with _steer(model, prior):
        batch_logits = model(tokens, attention_mask=mask)
        batch_out = _greedy(model, tokens, use_cache)
        for row, prompt in enumerate(prompts):
            alone_logits = model(prompt[None])
            alone_out = _greedy(model, prompt[None], use_cache)
            real = slice(width - len(prompt), width)
            torch.testing.assert_close(batch_logits[row, real], alone_logits[0])
            assert torch.equal(batch_out[row, real.start :], alone_out[0]), row


def test_same_seed_same_result_in_any_batch_and_different_seeds_differ(model, prior):
    short, long = _prompts(4, 7)
    tokens, _ = _left_pad([long, short])  # the short prompt is padded, in row 1
    outputs = {}
    for seed in (3, 4):
        with _steer(model, prior, seed=seed):
            outputs[seed] = (_greedy(model, short[None], True)[0], _greedy(model, tokens, True))
    for seed, (alone, batch) in outputs.items():
        assert torch.equal(batch[1, 3:], alone), seed
    assert not torch.equal(outputs[3][0], outputs[4][0])
    assert not torch.equal(outputs[3][1][0], outputs[4][1][0])


@pytest.mark.slow
def test_left_padded_batch_on_the_default_model_matches_each_prompt_alone(default_model):
    from tests.steering.helpers import RecordingPrior

    hook = "blocks.15.hook_resid_post"
    prompts = ["The weather today", "My favourite food is a bowl of"]
    vector = torch.randn(576, generator=torch.Generator().manual_seed(0)) * 20
    # Noise large enough that rows keyed differently (as before the fix) visibly diverge.
    prior = RecordingPrior(576, hook, default_model.cfg.model_name, noise_scale=4.0)
    kwargs = dict(max_new_tokens=5, do_sample=False, stop_at_eos=False, verbose=False)
    for use_cache in (True, False):
        with steer(default_model, hook, vector, 1.0, prior, seed=3):
            batch = default_model.generate(prompts, use_past_kv_cache=use_cache, **kwargs)
            alone = [
                default_model.generate(p, use_past_kv_cache=use_cache, **kwargs) for p in prompts
            ]
        assert batch == alone, use_cache
