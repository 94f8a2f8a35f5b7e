import pytest
import torch

from tests.lens_kinds import build_tiny_model, hooked_only
from tests.priors.helpers import randomize_, train_on_manifold
from tests.steering.helpers import RecordingPrior, greedy, hook_state
from tl_diffusion_prior.priors import MLPPrior, MLPPriorConfig
from tl_diffusion_prior.steering import (
    SteeringConfig,
    attach_steering,
    reference_norm_from_prior,
    steer,
    steering_suspended,
)

HOOK = "blocks.0.hook_resid_post"
STEERED = HOOK + ".hook_steered"
DENOISED = HOOK + ".hook_denoised"


def _tokens(batch=2, ctx=6, seed=0):
    return torch.randint(3, 300, (batch, ctx), generator=torch.Generator().manual_seed(seed))


def _vector(d=64, seed=1):
    return torch.randn(d, generator=torch.Generator().manual_seed(seed))


def _prior(model, **kwargs):
    return RecordingPrior(model.cfg.d_model, HOOK, model.cfg.model_name, **kwargs)


def _mlp_prior(model):
    config = MLPPriorConfig(
        d_model=64,
        hook_name=HOOK,
        model_name=model.cfg.model_name,
        depth=1,
        d_hidden=32,
        d_mlp=32,
        time_embed_dim=16,
    )
    return randomize_(MLPPrior(config), scale=0.05)


# --------------------------------------------------------------------------- plain steering
def test_scale_zero_reproduces_unhooked_logits_exactly(tiny_model):
    tokens = _tokens()
    clean = tiny_model(tokens)
    with steer(tiny_model, HOOK, _vector(), 0.0):
        assert torch.equal(tiny_model(tokens), clean)


def test_adds_alpha_vector_everywhere_but_position_zero(tiny_model):
    tokens, v = _tokens(), _vector()
    _, clean = tiny_model.run_with_cache(tokens, names_filter=[HOOK])
    with steer(tiny_model, HOOK, v, 3.0) as handle:
        _, cache = tiny_model.run_with_cache(tokens)
    diff = cache[HOOK] - clean[HOOK]
    assert handle.alpha == 3.0
    assert torch.equal(diff[:, 0], torch.zeros_like(diff[:, 0]))
    torch.testing.assert_close(diff[:, 1:], (3.0 * v).expand_as(diff[:, 1:]))
    torch.testing.assert_close(cache[STEERED], cache[HOOK], rtol=0, atol=0)
    assert DENOISED not in cache.keys()


def test_suspended_steering_passes_activations_through(tiny_model):
    tokens = _tokens()
    clean = tiny_model(tokens)
    with steer(tiny_model, HOOK, _vector(), 5.0, _prior(tiny_model), seed=0):
        with steering_suspended(tiny_model):
            assert torch.equal(tiny_model(tokens), clean)
        assert not torch.equal(tiny_model(tokens), clean)


def test_relative_scale(tiny_model):
    prior = _prior(tiny_model)
    mean, var = torch.randn(64, dtype=torch.float64), torch.rand(64, dtype=torch.float64) + 0.5
    prior.set_normalization(mean, var)
    expected = float(torch.sqrt(mean.square().sum() + var.sum()))
    assert reference_norm_from_prior(prior) == pytest.approx(expected, rel=1e-5)
    with steer(tiny_model, HOOK, _vector(), 0.5, prior, scale_mode="relative") as handle:
        assert handle.alpha == pytest.approx(0.5 * expected, rel=1e-5)
    with steer(
        tiny_model, HOOK, _vector(), 0.5, scale_mode="relative", reference_norm=10.0
    ) as handle:
        assert handle.alpha == 5.0


# ------------------------------------------------------------------------ prior hook points
def test_prior_hook_points_visible_while_attached_and_gone_after(tiny_model):
    before = hook_state(tiny_model)
    tokens, v = _tokens(), _vector()
    prior = _prior(tiny_model)
    _, clean = tiny_model.run_with_cache(tokens, names_filter=[HOOK])
    with steer(tiny_model, HOOK, v, 2.0, prior, seed=3) as handle:
        assert {STEERED, DENOISED} <= set(tiny_model.hook_dict)
        assert handle.steered_hook_name == STEERED and handle.denoised_hook_name == DENOISED
        _, cache = tiny_model.run_with_cache(tokens, names_filter=[HOOK, STEERED, DENOISED])
    assert hook_state(tiny_model) == before
    assert STEERED not in dict(tiny_model.named_modules())
    steered, denoised = cache[STEERED], cache[DENOISED]
    torch.testing.assert_close(steered[:, 1:], clean[HOOK][:, 1:] + 2.0 * v)
    # Identity normaliser: the recording prior maps x to 0.5 x + 0.1 noise.
    noise = prior.calls[0]["noise"].reshape(2, 5, 64)
    torch.testing.assert_close(denoised[:, 1:], 0.5 * steered[:, 1:] + 0.1 * noise)
    torch.testing.assert_close(cache[HOOK], denoised, rtol=0, atol=0)
    for name in (STEERED, DENOISED):
        assert torch.equal(cache[name][:, 0], clean[HOOK][:, 0])
    assert len(prior.calls) == 1 and prior.calls[0]["n"] == 10  # one batched call


def test_user_hooks_on_new_points_can_edit(tiny_model):
    tokens = _tokens()
    with steer(tiny_model, HOOK, _vector(), 1.0, _prior(tiny_model), seed=0):
        _, cache = tiny_model.run_with_cache(tokens, names_filter=[HOOK])
        with tiny_model.hooks([(DENOISED, lambda act, hook: torch.zeros_like(act))]):
            _, zeroed = tiny_model.run_with_cache(tokens, names_filter=[HOOK])
    assert torch.equal(zeroed[HOOK], torch.zeros_like(zeroed[HOOK]))
    assert not torch.equal(cache[HOOK], zeroed[HOOK])


@pytest.mark.parametrize("prior_dtype", [torch.float64, torch.bfloat16])
def test_dtype_and_shape_preserved_with_other_prior_dtype(tiny_model, prior_dtype):
    prior = _prior(tiny_model).to(prior_dtype)
    seen = []
    tokens = _tokens()
    with steer(tiny_model, HOOK, _vector(), 1.0, prior, seed=0):
        with tiny_model.hooks([(HOOK, lambda act, hook: seen.append(act))]):
            logits = tiny_model(tokens)
    assert prior.calls[0]["dtype"] == prior_dtype
    assert seen[0].dtype == torch.float32 and seen[0].shape == (2, 6, 64)
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()


def test_hook_returning_wrong_shape_is_an_error(tiny_model):
    with steer(tiny_model, HOOK, _vector(), 1.0, _prior(tiny_model), seed=0):
        bad = [(STEERED, lambda act, hook: act[:, :-1])]
        with pytest.raises(ValueError, match="hook_steered"):
            tiny_model.run_with_hooks(_tokens(), fwd_hooks=bad)
        bad = [(DENOISED, lambda act, hook: act.double())]
        with pytest.raises(ValueError, match="dtype"):
            tiny_model.run_with_hooks(_tokens(), fwd_hooks=bad)


# ---------------------------------------------------------------- generation and the KV cache
@pytest.mark.parametrize("with_prior", [False, True])
@pytest.mark.parametrize("positions", ["all", "prompt", "generated"])
def test_kv_cache_and_recomputation_give_identical_greedy_generations(
    tiny_model, with_prior, positions
):
    tokens, v = _tokens(2, 5), _vector()
    prior = _mlp_prior(tiny_model) if with_prior else None
    unsteered = greedy(tiny_model, tokens, 8)
    outputs = []
    for use_cache in (True, False):
        with steer(tiny_model, HOOK, v, 2.0, prior, num_steps=3, positions=positions, seed=7):
            outputs.append(greedy(tiny_model, tokens, 8, use_cache))
    assert torch.equal(outputs[0], outputs[1])
    assert not torch.equal(outputs[0], unsteered)


@pytest.mark.parametrize("positions", ["all", "prompt", "generated"])
def test_steered_positions_identical_with_and_without_cache(tiny_model, positions):
    tokens, n_new, seed = _tokens(2, 5), 4, 11
    found = []
    for use_cache in (True, False):
        prior = _prior(tiny_model)
        with steer(tiny_model, HOOK, _vector(), 1.0, prior, positions=positions, seed=seed):
            out = greedy(tiny_model, tokens, n_new, use_cache)
        found.append(prior.recorded_positions(tiny_model, seed, out))
    # The last generated token is never fed back, so positions 1..7 exist; 0 is never steered.
    prompt = {(r, p) for r in range(2) for p in range(1, 5)}
    generated = {(r, p) for r in range(2) for p in range(5, 8)}
    expected = {"all": prompt | generated, "prompt": prompt, "generated": generated}[positions]
    assert found[0] == found[1] == expected


def test_generate_stream_without_cache_tracks_generated_positions(tiny_model):
    tokens, seed = _tokens(1, 4), 2
    prior = _prior(tiny_model)
    with steer(tiny_model, HOOK, _vector(), 1.0, prior, positions="generated", seed=seed):
        chunks = list(
            tiny_model.generate_stream(
                tokens,
                max_new_tokens=4,
                max_tokens_per_yield=2,
                do_sample=False,
                stop_at_eos=False,
                verbose=False,
                use_past_kv_cache=False,
            )
        )
    assert sum(chunk.shape[1] for chunk in chunks) == 8  # the prompt and 4 new tokens
    sequence = torch.cat(chunks, dim=1)
    assert prior.recorded_positions(tiny_model, seed, sequence) == {(0, 4), (0, 5), (0, 6)}
    assert "generate_stream" not in tiny_model.__dict__


def test_noise_depends_on_seed_content_and_real_position_only(tiny_model):
    tokens = _tokens(2, 5)
    runs = {}
    for name, seed, use_cache, batch in [
        ("a", 1, True, tokens),
        ("b", 1, False, tokens),
        ("c", 2, True, tokens),
        ("swapped", 1, True, tokens.flip(0)),
        ("twice", 1, True, tokens[[0, 0]]),
    ]:
        prior = _prior(tiny_model)
        with steer(tiny_model, HOOK, _vector(), 1.0, prior, seed=seed):
            out = greedy(tiny_model, batch, 3, use_cache)
        runs[name] = (out, prior.calls)
    assert torch.equal(runs["a"][0], runs["b"][0])
    # Cached: first call covers the prompt; the non-cached first call is the same pass.
    torch.testing.assert_close(runs["a"][1][0]["noise"], runs["b"][1][0]["noise"], rtol=0, atol=0)
    assert not torch.equal(runs["a"][1][0]["noise"], runs["c"][1][0]["noise"])
    # Non-cached step 2 recomputes step 1's positions with the same noise.
    first, second = runs["b"][1][0]["noise"], runs["b"][1][1]["noise"]
    torch.testing.assert_close(second.reshape(2, 5, 64)[:, :4], first.reshape(2, 4, 64))
    # The noise follows what a row is, not where it sits: swapping the rows swaps their noise, the
    # same prompt twice gets the same noise, and different prompts get different noise.
    prompt_noise = {name: calls[0]["noise"].reshape(2, 4, 64) for name, (_, calls) in runs.items()}
    assert torch.equal(prompt_noise["swapped"], prompt_noise["a"].flip(0))
    assert torch.equal(prompt_noise["twice"][0], prompt_noise["a"][0])
    assert torch.equal(prompt_noise["twice"][1], prompt_noise["a"][0])
    assert not torch.equal(prompt_noise["a"][0], prompt_noise["a"][1])
    # Left padding shifts neither the positions nor the content the noise is keyed on.
    padded = torch.cat([torch.zeros(1, 2, dtype=torch.long), tokens[:1]], dim=1)
    mask = torch.ones_like(padded)
    mask[0, :2] = 0
    prior = _prior(tiny_model)
    with steer(tiny_model, HOOK, _vector(), 1.0, prior, seed=1):
        tiny_model(padded, attention_mask=mask)
    assert torch.equal(prior.calls[0]["noise"], prompt_noise["a"][0])


def test_same_seed_same_generation_and_default_seed_from_torch_rng(tiny_model):
    tokens = _tokens(1, 5)
    prior = _mlp_prior(tiny_model)
    outs = []
    for _ in range(2):
        with steer(tiny_model, HOOK, _vector(), 2.0, prior, num_steps=2, seed=5):
            outs.append(greedy(tiny_model, tokens, 6))
    assert torch.equal(outs[0], outs[1])
    seeds = []
    for _ in range(2):
        torch.manual_seed(123)
        with steer(tiny_model, HOOK, _vector(), 1.0, prior) as handle:
            seeds.append(handle.seed)
    assert seeds[0] == seeds[1]


@hooked_only  # a hand-written loop over a HookedTransformer's own KV cache
def test_left_padding_and_first_real_token_untouched_under_cache(tiny_model):
    from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache

    prompt = _tokens(2, 6)
    mask = torch.ones_like(prompt)
    mask[1, :3] = 0  # row 1 is left-padded: its first real token is at position 3
    v, seed = _vector(), 4
    _, clean = tiny_model.run_with_cache(prompt, attention_mask=mask, names_filter=[HOOK])
    prior = _prior(tiny_model)
    with steer(tiny_model, HOOK, v, 2.0, prior, seed=seed, positions="all"):
        _, cache = tiny_model.run_with_cache(prompt, attention_mask=mask, names_filter=[STEERED])
        kv = TransformerLensKeyValueCache.init_cache(tiny_model.cfg, tiny_model.cfg.device, 2)
        tiny_model(prompt, attention_mask=mask, past_kv_cache=kv)
        fed = [_tokens(2, 1, seed=step + 10) for step in range(2)]
        for token in fed:
            tiny_model(token, attention_mask=torch.ones(2, 1, dtype=torch.long), past_kv_cache=kv)
    untouched = [(0, 0), (1, 0), (1, 1), (1, 2), (1, 3)]
    for row, pos in untouched:
        assert torch.equal(cache[STEERED][row, pos], clean[HOOK][row, pos])
    torch.testing.assert_close(cache[STEERED][0, 1:], clean[HOOK][0, 1:] + 2.0 * v)
    sequence = torch.cat([prompt, *fed], dim=1)
    full_mask = torch.cat([mask, torch.ones(2, 2, dtype=torch.long)], dim=1)
    found = prior.recorded_positions(tiny_model, seed, sequence, full_mask)
    expected = {(r, p) for r in range(2) for p in range(8)} - set(untouched)
    # The first forward (run_with_cache) and the cached prefill steer the same positions.
    assert found == expected


@hooked_only  # a hand-written loop over a HookedTransformer's own KV cache
def test_prompt_and_generated_in_handwritten_cached_loop(tiny_model):
    from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache

    prompt = _tokens(1, 4)
    ones = torch.ones(1, 4, dtype=torch.long)
    for positions, expected in [("prompt", {1, 2, 3}), ("generated", {4, 5})]:
        prior = _prior(tiny_model)
        with steer(tiny_model, HOOK, _vector(), 1.0, prior, seed=0, positions=positions):
            kv = TransformerLensKeyValueCache.init_cache(tiny_model.cfg, tiny_model.cfg.device, 1)
            tiny_model(prompt, attention_mask=ones, past_kv_cache=kv)
            fed = [_tokens(1, 1, seed=step) for step in range(2)]
            for token in fed:
                tiny_model(token, attention_mask=ones[:, :1], past_kv_cache=kv)
        sequence = torch.cat([prompt, *fed], dim=1)
        assert {p for _, p in prior.recorded_positions(tiny_model, 0, sequence)} == expected


def test_generate_runs_under_inference_mode_and_grad_mode_forward_works(tiny_model):
    tokens = _tokens()
    with steer(tiny_model, HOOK, _vector(), 1.0, _prior(tiny_model), seed=0):
        greedy(tiny_model, tokens, 2)
        loss = tiny_model(tokens, return_type="loss")
        loss.backward()
    assert tiny_model.embed.W_E.grad is not None


# --------------------------------------------------------------------------- hook hygiene
def test_no_hook_survives_an_exception_in_the_body_or_in_a_hook(tiny_model):
    before = hook_state(tiny_model)
    with pytest.raises(KeyError):
        with steer(tiny_model, HOOK, _vector(), 1.0, _prior(tiny_model), seed=0):
            raise KeyError("body")
    assert hook_state(tiny_model) == before
    with pytest.raises(RuntimeError, match="prior failure"):
        with steer(tiny_model, HOOK, _vector(), 1.0, _prior(tiny_model, fail=True), seed=0):
            greedy(tiny_model, _tokens(), 2)
    assert hook_state(tiny_model) == before
    assert torch.equal(greedy(tiny_model, _tokens(), 2), greedy(tiny_model, _tokens(), 2))


def test_other_contexts_and_reset_hooks_leave_steering_alone(tiny_model):
    tokens = _tokens()
    clean = tiny_model(tokens)
    with steer(tiny_model, HOOK, _vector(), 2.0) as handle:
        steered = tiny_model(tokens)
        with tiny_model.hooks([(HOOK, lambda act, hook: None)]):
            pass
        tiny_model.run_with_hooks(tokens, fwd_hooks=[(HOOK, lambda act, hook: None)])
        tiny_model.run_with_cache(tokens)
        tiny_model.reset_hooks()
        assert handle.is_active
        assert torch.equal(tiny_model(tokens), steered)
    assert torch.equal(tiny_model(tokens), clean)


def test_detaching_leaves_other_hooks_alone(tiny_model):
    calls = []
    user_hook = (HOOK, lambda act, hook: calls.append(1))
    with tiny_model.hooks([user_hook]):
        with steer(tiny_model, HOOK, _vector(), 1.0, _prior(tiny_model), seed=0):
            with steer(tiny_model, "blocks.1.hook_resid_pre", _vector(), 1.0) as inner:
                pass
            assert not inner.is_attached
            tiny_model(_tokens())
        tiny_model(_tokens())
    assert len(calls) == 2
    assert hook_state(tiny_model)["fwd_hooks"][HOOK] == 0


def test_permanent_handle_and_reset_including_permanent(tiny_model):
    before = hook_state(tiny_model)
    handle = attach_steering(tiny_model, HOOK, _vector(), 1.0, positions="prompt")
    assert handle.is_active and "generate" in tiny_model.__dict__
    tiny_model.reset_hooks(including_permanent=True)
    assert not handle.is_active and handle.is_attached
    handle.detach()
    handle.detach()
    assert hook_state(tiny_model) == before


def test_nested_steerings_at_two_layers(tiny_model):
    tokens = _tokens()
    before = hook_state(tiny_model)
    with steer(tiny_model, HOOK, _vector(), 1.0, _prior(tiny_model), seed=0) as outer:
        with steer(tiny_model, "blocks.1.hook_resid_mid", _vector(seed=2), 1.0):
            both = greedy(tiny_model, tokens, 3, use_cache=False)
            assert torch.equal(both, greedy(tiny_model, tokens, 3))
        assert outer.is_active
    assert hook_state(tiny_model) == before


# ------------------------------------------------------------------------------ validation
@pytest.mark.parametrize(
    "vector, error, match",
    [
        (torch.randn(63), ValueError, "shape"),
        (torch.randn(1, 64), ValueError, "shape"),
        (torch.randn(64, dtype=torch.float64), TypeError, "dtype"),
        (torch.ones(64, dtype=torch.long), TypeError, "dtype"),
        (torch.randn(64, device="meta"), ValueError, "vector.to"),
        (torch.full((64,), float("nan")), ValueError, "NaN"),
        ([0.0] * 64, TypeError, "torch.Tensor"),
    ],
)
def test_bad_vectors_rejected_before_anything_is_attached(tiny_model, vector, error, match):
    before = hook_state(tiny_model)
    with pytest.raises(error, match=match):
        attach_steering(tiny_model, HOOK, vector, 1.0)
    assert hook_state(tiny_model) == before


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(hook_name="blocks.0.hook_resid_pots"), "Did you mean"),
        (dict(hook_name="hook_embed"), "inside a block"),
        (dict(prior_hook="blocks.1.hook_resid_post"), "trained on 'blocks.1"),
        (dict(prior_d_model=32), "d_model=32"),
        (dict(prior_model="other-model"), "other-model"),
        (dict(positions="last"), "positions"),
        (dict(t_start=0.0), "t_start"),
        (dict(num_steps=0), "num_steps"),
        (dict(scale=float("inf")), "finite"),
        (dict(scale_mode="relative", no_prior=True), "reference norm"),
        (dict(seed=-1), "seed"),
    ],
)
def test_invalid_settings_rejected_before_any_forward(tiny_model, kwargs, match):
    before = hook_state(tiny_model)
    hook_name = kwargs.pop("hook_name", HOOK)
    prior = RecordingPrior(
        kwargs.pop("prior_d_model", 64),
        kwargs.pop("prior_hook", HOOK),
        kwargs.pop("prior_model", tiny_model.cfg.model_name),
    )
    if kwargs.pop("no_prior", False):
        prior = None
    scale = kwargs.pop("scale", 1.0)
    vector = _vector(64)
    with pytest.raises(ValueError, match=match):
        attach_steering(tiny_model, hook_name, vector, scale, prior, **kwargs)
    assert hook_state(tiny_model) == before


def test_steering_the_same_hook_twice_is_an_error(tiny_model):
    with steer(tiny_model, HOOK, _vector(), 1.0):
        with pytest.raises(ValueError, match="already steered"):
            attach_steering(tiny_model, HOOK, _vector(), 1.0)
        with pytest.raises(ValueError, match="host hook"):
            attach_steering(tiny_model, STEERED, _vector(), 1.0)


def test_config_round_trip_and_validation():
    config = SteeringConfig(scale=2, positions="generated", seed=3)
    assert config.scale == 2.0
    assert SteeringConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="Unknown"):
        SteeringConfig.from_dict({"scale": 1.0, "alpha": 2})
    with pytest.raises(TypeError, match="num_steps"):
        SteeringConfig(scale=1.0, num_steps=2.5)


def test_a_config_and_keyword_overrides_steer_alike(tiny_model):
    tokens, v, prior = _tokens(), _vector(), _mlp_prior(tiny_model)
    keywords = dict(t_start=0.3, num_steps=2, seed=5, positions="all")
    with steer(tiny_model, HOOK, v, 0.5, prior, **keywords) as handle:
        expected = tiny_model(tokens)
    assert handle.config == SteeringConfig(scale=0.5, **keywords)
    config = SteeringConfig(scale=9.0, t_start=0.3, num_steps=7, seed=5)
    # scale and keywords replace the config's fields; the config itself is left as it was.
    with steer(tiny_model, HOOK, v, 0.5, prior, config=config, num_steps=2) as handle:
        assert torch.equal(tiny_model(tokens), expected)
    assert handle.config == SteeringConfig(scale=0.5, **keywords)
    assert config.num_steps == 7
    with steer(tiny_model, HOOK, v, prior=prior, config=handle.config):
        assert torch.equal(tiny_model(tokens), expected)
    with pytest.raises(TypeError, match=r"Unknown steering option\(s\) \['alpha'\]"):
        attach_steering(tiny_model, HOOK, v, 1.0, alpha=2.0)
    with pytest.raises(TypeError, match="Pass the steering scale"):
        attach_steering(tiny_model, HOOK, v)
    assert not tiny_model.hook_dict[HOOK].fwd_hooks


# ------------------------------------------------------------------ on-manifold steering
@pytest.fixture(scope="module")
def manifold_and_prior():
    """A small MLP prior fitted in a few seconds to a torus embedded in 16 dims."""
    prior, manifold, _ = train_on_manifold(model_name="custom")
    return manifold, prior


def test_prior_pulls_steered_activations_back_towards_the_manifold(manifold_and_prior):
    manifold, prior = manifold_and_prior
    model = build_tiny_model(d_model=16, d_head=4, n_heads=4, d_mlp=32)
    # Make blocks.0.hook_resid_post equal the embedding, and the embedding points on the manifold.
    with torch.no_grad():
        for param in (model.blocks[0].attn.W_O, model.blocks[0].mlp.W_out):
            param.zero_()
    gen = torch.Generator().manual_seed(1)
    points = manifold.sample(4 * 12, gen, noise_std=0.0).reshape(4, 12, 16)
    direction = _vector(16) / _vector(16).norm()
    with model.hooks([("hook_embed", lambda act, hook: points)]):
        with steer(model, HOOK, direction, 3.0, prior, num_steps=10, seed=0):
            _, cache = model.run_with_cache(_tokens(4, 12), names_filter=[STEERED, DENOISED])
    plain = manifold.distance_to_manifold(cache[STEERED][:, 1:]).mean()
    projected = manifold.distance_to_manifold(cache[DENOISED][:, 1:]).mean()
    assert plain > 2.0  # the addition moved the points off the manifold
    assert projected < 0.5 * plain, (float(plain), float(projected))


# ------------------------------------------------------------------------- the real model
@pytest.mark.slow
def test_batched_left_padded_generation_on_the_default_model(default_model):
    hook, seed = "blocks.15.hook_resid_post", 3
    prompts = ["The weather today", "My favourite food is"]  # different lengths: left padding
    tokens = default_model.to_tokens(prompts, padding_side="left")
    n_pad = int((tokens[0] == default_model.tokenizer.pad_token_id).sum())
    assert n_pad > 0
    vector = torch.randn(576, generator=torch.Generator().manual_seed(0)) * 20
    outputs, found = [], []
    for use_cache in (True, False):
        prior = RecordingPrior(576, hook, default_model.cfg.model_name)
        with steer(default_model, hook, vector, 1.0, prior, seed=seed, positions="all"):
            outputs.append(
                default_model.generate(
                    prompts,
                    max_new_tokens=4,
                    do_sample=False,
                    verbose=False,
                    use_past_kv_cache=use_cache,
                    return_type="tokens",
                )
            )
        mask = torch.ones_like(outputs[-1])
        mask[0, :n_pad] = 0
        found.append(prior.recorded_positions(default_model, seed, outputs[-1], mask))
    assert torch.equal(outputs[0], outputs[1])
    assert found[0] == found[1]
    # Row 0's pads and its BOS (the first real token), and row 1's BOS, are never steered.
    never = {(0, p) for p in range(n_pad + 1)} | {(1, 0)}
    assert not found[0] & never
    assert {(0, n_pad + 1), (1, 1), (0, tokens.shape[1]), (1, tokens.shape[1] + 2)} <= found[0]


# ------------------------------------------------------------------ projection instead of a prior
def _drop_direction(direction):
    unit = direction / direction.norm()

    def project(x):
        return x - (x @ unit).unsqueeze(-1) * unit

    return project


def test_projection_replaces_only_steered_positions(tiny_model):
    tokens, v = _tokens(), _vector()
    project = _drop_direction(_vector(seed=5))
    _, clean = tiny_model.run_with_cache(tokens, names_filter=[HOOK])
    with steer(tiny_model, HOOK, v, 3.0, projection=project) as handle:
        _, cache = tiny_model.run_with_cache(tokens)
    assert handle.denoised_hook_name == DENOISED
    expected = project(clean[HOOK][:, 1:] + 3.0 * v)
    torch.testing.assert_close(cache[DENOISED][:, 1:], expected)
    torch.testing.assert_close(cache[HOOK], cache[DENOISED], rtol=0, atol=0)
    assert torch.equal(cache[HOOK][:, 0], clean[HOOK][:, 0])  # the first position untouched
    assert DENOISED not in tiny_model.hook_dict


def test_projection_kv_cache_and_recomputation_agree(tiny_model):
    tokens, project = _tokens(2, 5), _drop_direction(_vector(seed=5))
    outputs = []
    for use_cache in (True, False):
        with steer(tiny_model, HOOK, _vector(), 2.0, projection=project):
            outputs.append(greedy(tiny_model, tokens, 6, use_cache))
    assert torch.equal(outputs[0], outputs[1])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(projection="sae"), "callable"),
        (dict(projection=lambda x: x, prior=True), "one of prior= or projection="),
    ],
)
def test_bad_projection_rejected_before_attaching(tiny_model, kwargs, match):
    if kwargs.get("prior"):
        kwargs["prior"] = _prior(tiny_model)
    with pytest.raises(TypeError, match=match):
        attach_steering(tiny_model, HOOK, _vector(), 1.0, **kwargs)
    assert STEERED not in tiny_model.hook_dict


def test_projection_returning_wrong_shape_is_an_error(tiny_model):
    with steer(tiny_model, HOOK, _vector(), 1.0, projection=lambda x: x[:, :-1]):
        with pytest.raises(ValueError, match="input's shape"):
            tiny_model(_tokens())


# ------------------------------------------------------------------------------ edit mode
def test_edit_mode_at_scale_zero_leaves_the_model_unchanged(tiny_model):
    """``h + D(h) - D(h)``: the prior's own error on the unsteered activation cancels, so the
    outputs are the unhooked ones (in "replace" mode the same prior changes them)."""
    tokens = _tokens()
    clean = tiny_model(tokens)
    prior = _mlp_prior(tiny_model)
    with steer(tiny_model, HOOK, _vector(), 0.0, prior, seed=0, denoise_mode="edit"):
        torch.testing.assert_close(tiny_model(tokens), clean, rtol=0, atol=1e-5)
    with steer(tiny_model, HOOK, _vector(), 0.0, prior, seed=0):
        assert not torch.allclose(tiny_model(tokens), clean, atol=1e-3)


def test_edit_mode_adds_the_prior_map_of_the_edit_with_one_noise(tiny_model):
    tokens, v = _tokens(), _vector()
    prior = _prior(tiny_model)  # D(x) = denormalize(0.5 z + 0.1 noise)
    _, clean = tiny_model.run_with_cache(tokens, names_filter=[HOOK])
    with steer(tiny_model, HOOK, v, 3.0, prior, seed=0, denoise_mode="edit"):
        _, cache = tiny_model.run_with_cache(tokens)
    (call,) = prior.calls
    n = call["n"] // 2
    assert call["n"] == 2 * n and torch.equal(call["noise"][:n], call["noise"][n:])
    # The noise and the mean cancel in the difference: 0.5 z(h + 3v) - 0.5 z(h) = 0.5 * 3v.
    expected = clean[HOOK][:, 1:] + 0.5 * 3.0 * v
    torch.testing.assert_close(cache[DENOISED][:, 1:], expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(cache[HOOK][:, 0], clean[HOOK][:, 0])


def test_edit_mode_with_a_projection_and_kv_cache(tiny_model):
    tokens, v = _tokens(2, 5), _vector()
    project = _drop_direction(_vector(seed=5))
    _, clean = tiny_model.run_with_cache(tokens, names_filter=[HOOK])
    with steer(tiny_model, HOOK, v, 3.0, projection=project, denoise_mode="edit"):
        _, cache = tiny_model.run_with_cache(tokens)
    # A linear projection P: h + P(h + 3v) - P(h) = h + 3 P(v).
    expected = clean[HOOK][:, 1:] + 3.0 * project(v)
    torch.testing.assert_close(cache[DENOISED][:, 1:], expected, rtol=1e-5, atol=1e-4)
    outputs, prior = [], _mlp_prior(tiny_model)
    for use_cache in (True, False):
        with steer(tiny_model, HOOK, v, 2.0, prior, seed=1, denoise_mode="edit"):
            outputs.append(greedy(tiny_model, tokens, 6, use_cache))
    assert torch.equal(outputs[0], outputs[1])


def test_unknown_denoise_mode_rejected_before_attaching(tiny_model):
    with pytest.raises(ValueError, match="denoise_mode"):
        attach_steering(tiny_model, HOOK, _vector(), 1.0, _prior(tiny_model), denoise_mode="diff")
    assert STEERED not in tiny_model.hook_dict
