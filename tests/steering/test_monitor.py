import pytest
import torch

from tests.priors.helpers import randomize_
from tests.steering.helpers import greedy, hook_state
from tl_diffusion_prior.priors import MLPPrior, MLPPriorConfig
from tl_diffusion_prior.priors.score import ScoreConfig, ScoreNoise
from tl_diffusion_prior.steering import attach_monitor, monitor, steer
from tl_diffusion_prior.steering.noise import prefix_keys
from tl_diffusion_prior.steering.positions import real_positions

HOOK = "blocks.0.hook_resid_post"
SCORE = HOOK + ".hook_manifold_score"
STEERED_SCORE = HOOK + ".hook_steered_manifold_score"
STEERED = HOOK + ".hook_steered"


def _tokens(batch=2, ctx=6, seed=0):
    return torch.randint(3, 300, (batch, ctx), generator=torch.Generator().manual_seed(seed))


def _prior(model, hook_name=HOOK):
    config = MLPPriorConfig(
        d_model=64,
        hook_name=hook_name,
        model_name=model.cfg.model_name,
        depth=1,
        d_hidden=32,
        d_mlp=32,
        time_embed_dim=16,
    )
    return randomize_(MLPPrior(config), scale=0.05).eval()


def _expected_scores(model, prior, tokens, activation, seed=0):
    """The score of every position but the first, rebuilt from the public pieces: the prior's
    score of ``activation`` with the noise of each token's sequence key and position."""
    batch, length = tokens.shape
    _, cache = model.run_with_cache(tokens, names_filter=["blocks.0.hook_resid_pre"])
    real, positions = real_positions(None, batch, 0, length, tokens.device)
    keys = prefix_keys(cache["blocks.0.hook_resid_pre"], real, positions)
    noise = ScoreNoise(ScoreConfig(seed=seed), 64).for_tokens(keys.flatten(), positions.flatten())
    return prior.score(activation, noise=noise.reshape(batch, length, 3, 64))[:, 1:]


def test_run_with_cache_shows_the_score_of_every_token_and_outputs_are_unchanged(tiny_model):
    tokens, prior = _tokens(), _prior(tiny_model)
    clean_logits, clean = tiny_model.run_with_cache(tokens)
    with monitor(tiny_model, HOOK, prior) as handle:
        logits, cache = tiny_model.run_with_cache(tokens)
        assert torch.equal(tiny_model(tokens), clean_logits)
    assert handle.score_hook_name == SCORE and handle.steered_score_hook_name is None
    assert torch.equal(logits, clean_logits)
    assert all(torch.equal(cache[name], clean[name]) for name in clean.keys())
    scores = cache[SCORE]
    assert scores.shape == (2, 6) and scores.dtype == torch.float32
    assert bool(scores[:, 0].isnan().all()) and bool(torch.isfinite(scores[:, 1:]).all())
    expected = _expected_scores(tiny_model, prior, tokens, clean[HOOK])
    torch.testing.assert_close(scores[:, 1:], expected)


def test_run_with_hooks_sees_the_scores_and_generation_is_unchanged(tiny_model):
    tokens, prior = _tokens(), _prior(tiny_model)
    seen = []
    reference = greedy(tiny_model, tokens, 4)
    with monitor(tiny_model, HOOK, prior):
        tiny_model.run_with_hooks(tokens, fwd_hooks=[(SCORE, lambda x, hook: seen.append(x))])
        assert torch.equal(greedy(tiny_model, tokens, 4), reference)
    assert len(seen) == 1 and seen[0].shape == (2, 6)


@pytest.mark.parametrize("seed", [0, 5])
def test_kv_cache_and_recomputation_give_the_same_scores_during_generate(tiny_model, seed):
    tokens, prior = _tokens(ctx=5), _prior(tiny_model)
    per_mode = {True: [], False: []}
    with monitor(tiny_model, HOOK, prior, seed=seed):
        for use_cache, passes in per_mode.items():
            with tiny_model.hooks(fwd_hooks=[(SCORE, lambda x, hook, out=passes: out.append(x))]):
                greedy(tiny_model, tokens, 4, use_cache)
    cached, recomputed = per_mode[True], per_mode[False]
    assert [p.shape[1] for p in cached] == [5, 1, 1, 1]
    assert [p.shape[1] for p in recomputed] == [5, 6, 7, 8]
    torch.testing.assert_close(
        torch.cat(cached, dim=1), recomputed[-1], rtol=1e-4, atol=1e-5, equal_nan=True
    )


def test_the_ode_score_works_inside_generate_and_inference_mode(tiny_model):
    tokens, prior = _tokens(ctx=4), _prior(tiny_model)
    seen = []
    config = ScoreConfig("ode", ode_steps=3)
    with monitor(tiny_model, HOOK, prior, config):
        with tiny_model.hooks(fwd_hooks=[(SCORE, lambda x, hook: seen.append(x))]):
            greedy(tiny_model, tokens, 2)
            with torch.inference_mode():
                tiny_model(tokens)
    assert [s.shape for s in seen] == [(2, 4), (2, 1), (2, 4)]
    assert bool(torch.isfinite(seen[0][:, 1:]).all())
    torch.testing.assert_close(seen[2], seen[0], equal_nan=True)
    expected = prior.score(tiny_model.run_with_cache(tokens)[1][HOOK][:, 1:], config)
    assert not torch.allclose(seen[0][:, 1:], expected)  # keyed by token, not by the vector


def test_a_token_scores_the_same_alone_and_in_any_batch(tiny_model):
    prompt, prior = _tokens(1, 6), _prior(tiny_model)
    with monitor(tiny_model, HOOK, prior):
        _, alone = tiny_model.run_with_cache(prompt, names_filter=[SCORE])
        batch = torch.cat([_tokens(1, 6, seed=3), prompt, prompt])
        _, mixed = tiny_model.run_with_cache(batch, names_filter=[SCORE])
    for row in (1, 2):
        torch.testing.assert_close(mixed[SCORE][row], alone[SCORE][0], equal_nan=True)
    assert not torch.allclose(mixed[SCORE][0, 1:], alone[SCORE][0, 1:])


def test_left_padding_is_not_scored_and_shifts_no_score(tiny_model):
    prompt, prior = _tokens(1, 5), _prior(tiny_model)
    padded = torch.cat([torch.zeros(1, 2, dtype=torch.long), prompt], dim=1)
    mask = torch.ones_like(padded)
    mask[0, :2] = 0
    seen = []
    with monitor(tiny_model, HOOK, prior):
        with tiny_model.hooks(fwd_hooks=[(SCORE, lambda x, hook: seen.append(x))]):
            tiny_model(prompt)
            tiny_model(padded, attention_mask=mask)
    alone, shifted = seen
    assert bool(shifted[0, :3].isnan().all())  # two pads and the first real token
    torch.testing.assert_close(shifted[:, 2:], alone, rtol=1e-4, atol=1e-5, equal_nan=True)


def test_with_steer_scores_the_steered_and_the_denoised_activation(tiny_model):
    tokens, prior = _tokens(), _prior(tiny_model)
    vector = torch.randn(64, generator=torch.Generator().manual_seed(1))
    _, clean = tiny_model.run_with_cache(tokens, names_filter=[SCORE, HOOK])
    with steer(tiny_model, HOOK, vector, 3.0, prior, seed=0):
        steered_logits = tiny_model(tokens)
        with monitor(tiny_model, HOOK, prior) as handle:
            logits, cache = tiny_model.run_with_cache(tokens)
    assert handle.steered_score_hook_name == STEERED_SCORE
    assert torch.equal(logits, steered_logits)  # monitoring a steered model changes nothing
    expected = _expected_scores(tiny_model, prior, tokens, cache[STEERED])
    torch.testing.assert_close(cache[STEERED_SCORE][:, 1:], expected)
    expected = _expected_scores(tiny_model, prior, tokens, cache[HOOK])  # the denoised one
    torch.testing.assert_close(cache[SCORE][:, 1:], expected)
    assert not torch.allclose(cache[SCORE][:, 1:], cache[STEERED_SCORE][:, 1:])


def test_monitor_outside_steer_scores_the_final_activation(tiny_model):
    tokens, prior = _tokens(), _prior(tiny_model)
    vector = torch.randn(64, generator=torch.Generator().manual_seed(1))
    with monitor(tiny_model, HOOK, prior):
        _, unsteered = tiny_model.run_with_cache(tokens, names_filter=[SCORE])
        with steer(tiny_model, HOOK, vector, 3.0):  # plain steering, attached after
            _, cache = tiny_model.run_with_cache(tokens, names_filter=[SCORE, HOOK])
    assert STEERED_SCORE not in cache.keys()
    expected = _expected_scores(tiny_model, prior, tokens, cache[HOOK])
    torch.testing.assert_close(cache[SCORE][:, 1:], expected)
    assert bool((cache[SCORE][:, 1:] != unsteered[SCORE][:, 1:]).all())


def test_hooks_removed_on_exit_after_an_exception_and_on_detach(tiny_model):
    before = hook_state(tiny_model)
    prior = _prior(tiny_model)
    with monitor(tiny_model, HOOK, prior):
        assert hook_state(tiny_model) != before
    assert hook_state(tiny_model) == before
    with pytest.raises(RuntimeError, match="inside the block"):
        with monitor(tiny_model, HOOK, prior):
            raise RuntimeError("inside the block")
    assert hook_state(tiny_model) == before
    # An error raised inside the hook (a user's hook on the score returns the wrong shape).
    with pytest.raises(ValueError, match="must return the scores' shape"):
        with monitor(tiny_model, HOOK, prior):
            tiny_model.run_with_hooks(_tokens(), fwd_hooks=[(SCORE, lambda x, hook: x[:, :1])])
    assert hook_state(tiny_model) == before
    handle = attach_monitor(tiny_model, HOOK, prior)
    tiny_model.reset_hooks()  # a permanent hook: survives
    assert handle.is_active
    handle.detach()
    handle.detach()
    assert hook_state(tiny_model) == before and not handle.is_attached


@pytest.mark.parametrize(
    "hook_name, prior_hook, kwargs, error, match",
    [
        ("blocks.0.attn.hook_pattern", HOOK, {}, ValueError, "not one d_model-wide vector"),
        (STEERED, HOOK, {}, ValueError, "added by steering or monitoring"),
        (HOOK, "blocks.1.hook_resid_post", {}, ValueError, "trained on"),
        (HOOK, HOOK, dict(method="exact"), ValueError, "method must be one of"),
        (HOOK, HOOK, dict(levels=(1.5,)), ValueError, "levels"),
    ],
)
def test_bad_arguments_are_refused_before_any_hook_is_added(
    tiny_model, hook_name, prior_hook, kwargs, error, match
):
    before = hook_state(tiny_model)
    with pytest.raises(error, match=match):
        attach_monitor(tiny_model, hook_name, _prior(tiny_model, prior_hook), **kwargs)
    assert hook_state(tiny_model) == before


def test_a_hook_is_monitored_once(tiny_model):
    prior = _prior(tiny_model)
    with monitor(tiny_model, HOOK, prior):
        with pytest.raises(ValueError, match="already monitored"):
            attach_monitor(tiny_model, HOOK, prior)
        with pytest.raises(ValueError, match="added by steering or monitoring"):
            attach_monitor(tiny_model, SCORE, prior)
    with pytest.raises(TypeError, match="DiffusionPrior"):
        attach_monitor(tiny_model, HOOK, object())
