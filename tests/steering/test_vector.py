import pytest
import torch

from tests.lens_kinds import hooked_only
from tl_diffusion_prior.steering.steer import steer
from tl_diffusion_prior.steering.vector import (
    mean_activation_norm,
    prompt_tokens,
    steering_vector,
)

HOOK = "blocks.1.hook_resid_pre"


def _prompts(lengths, seed):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(3, 300, (n,), generator=gen) for n in lengths]


def _activations(model, tokens):
    _, cache = model.run_with_cache(tokens[None], names_filter=[HOOK])
    return cache[HOOK][0]


def test_difference_of_means_reads_every_position_but_the_first(tiny_model):
    positive, negative = _prompts([5, 9, 3], 0), _prompts([7, 4], 1)
    vector = steering_vector(tiny_model, HOOK, positive, negative, outlier_multiple=None)

    def set_mean(prompts):
        return torch.stack([_activations(tiny_model, p)[1:].mean(0) for p in prompts]).mean(0)

    expected = set_mean(positive) - set_mean(negative)
    assert vector.shape == (64,) and vector.dtype == torch.float32
    torch.testing.assert_close(vector, expected, rtol=1e-4, atol=1e-5)


def test_last_token_reduction(tiny_model):
    positive, negative = _prompts([5, 9], 2), _prompts([7, 4], 3)
    vector = steering_vector(tiny_model, HOOK, positive, negative, reduce="last")

    def set_mean(prompts):
        return torch.stack([_activations(tiny_model, p)[-1] for p in prompts]).mean(0)

    torch.testing.assert_close(
        vector, set_mean(positive) - set_mean(negative), rtol=1e-4, atol=1e-5
    )


def test_token_matrix_equals_list_of_rows_and_batching_does_not_matter(tiny_model):
    positive = torch.stack(_prompts([6, 6, 6], 4))
    negative = torch.stack(_prompts([6, 6], 5))
    a = steering_vector(tiny_model, HOOK, positive, negative)
    b = steering_vector(tiny_model, HOOK, list(positive), list(negative), batch_size=1)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_outlier_positions_are_dropped(tiny_model):
    positive, negative = _prompts([6, 6, 6], 6), _prompts([6, 6], 7)
    base = steering_vector(tiny_model, HOOK, positive, negative)
    # A hook that blows up one position of the first positive prompt only.
    calls = []

    def blow_up(activation, hook):
        calls.append(1)
        if len(calls) == 1:
            activation[0, 2] *= 1000
        return activation

    with tiny_model.hooks([(HOOK, blow_up)]):
        robust = steering_vector(tiny_model, HOOK, positive, negative)
    calls.clear()
    with tiny_model.hooks([(HOOK, blow_up)]):
        poisoned = steering_vector(tiny_model, HOOK, positive, negative, outlier_multiple=None)
    assert (robust - base).norm() < 0.2 * base.norm()
    assert (poisoned - base).norm() > 10 * base.norm()


def test_reads_the_unsteered_model(tiny_model):
    positive, negative = _prompts([5, 6], 8), _prompts([6, 5], 9)
    clean = steering_vector(tiny_model, HOOK, positive, negative)
    with steer(tiny_model, "blocks.0.hook_resid_post", torch.randn(64), 10.0):
        inside = steering_vector(tiny_model, HOOK, positive, negative)
    assert torch.equal(clean, inside)


def test_mean_activation_norm(tiny_model):
    prompts = _prompts([5, 8], 10)
    expected = torch.cat([_activations(tiny_model, p)[1:].norm(dim=-1) for p in prompts]).mean()
    norm = mean_activation_norm(tiny_model, HOOK, prompts, outlier_multiple=None)
    assert norm == pytest.approx(float(expected), rel=1e-5)


@pytest.mark.parametrize(
    "prompts, error, match",
    [
        ([], ValueError, "non-empty"),
        ([torch.tensor([5])], ValueError, "at least 2 tokens"),
        (torch.randn(2, 4), ValueError, "integer tokens"),
        pytest.param("some text", ValueError, "no tokenizer", marks=hooked_only),
        ([torch.ones(2, 3, dtype=torch.long)], TypeError, "1-D integer"),
    ],
)
def test_bad_prompts(tiny_model, prompts, error, match):
    with pytest.raises(error, match=match):
        prompt_tokens(tiny_model, prompts)


def test_unknown_hook_and_bad_options(tiny_model):
    prompts = _prompts([4, 4], 11)
    with pytest.raises(ValueError, match="Did you mean"):
        steering_vector(tiny_model, "blocks.1.hook_resid_pr", prompts, prompts)
    with pytest.raises(ValueError, match="reduce"):
        steering_vector(tiny_model, HOOK, prompts, prompts, reduce="max")
    with pytest.raises(ValueError, match="outlier_multiple"):
        steering_vector(tiny_model, HOOK, prompts, prompts, outlier_multiple=0.5)


@pytest.mark.slow
def test_strings_on_the_default_model(default_model):
    hook = "blocks.15.hook_resid_post"
    vector = steering_vector(
        default_model, hook, ["I love this, it is wonderful"], ["I hate this, it is awful"]
    )
    norm = mean_activation_norm(default_model, hook, ["The weather today is mild and calm."])
    assert vector.shape == (576,) and torch.isfinite(vector).all()
    assert 0 < vector.norm() < norm < 1000
