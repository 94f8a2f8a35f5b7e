import pytest
import torch

from tl_diffusion_prior.evaluate.baselines.base import fit_normalizer
from tl_diffusion_prior.evaluate.baselines.gaussian import GaussianBaseline
from tl_diffusion_prior.evaluate.fidelity import (
    Condition,
    TokenSet,
    evaluate_reconstructor,
    prepare_clean_pass,
    token_windows,
)
from tl_diffusion_prior.evaluate.reconstructors import IdentityReconstructor, PCAReconstructor


class ZeroReconstructor:
    name, setting = "zeros", {}

    def reconstruct(self, x, *, generator=None):
        return torch.zeros_like(x)

    def restore(self, x_noisy, noise_std, *, generator=None):
        return torch.zeros_like(x_noisy)


@pytest.fixture
def token_set():
    gen = torch.Generator().manual_seed(0)
    return TokenSet("random", torch.randint(0, 300, (6, 12), generator=gen), torch.arange(6) // 2)


@pytest.mark.parametrize(
    "hook", ["blocks.0.hook_resid_post", "blocks.1.hook_resid_pre", "blocks.1.hook_mlp_out"]
)
def test_identity_patch_changes_nothing(tiny_model, token_set, hook):
    clean = prepare_clean_pass(tiny_model, token_set, hook, batch_size=4)
    normalizer = fit_normalizer(clean.rows)
    result = evaluate_reconstructor(tiny_model, clean, IdentityReconstructor(), normalizer)
    assert result.delta_lm.mean == 0.0
    assert (result.delta_lm.low, result.delta_lm.high) == (0.0, 0.0)
    assert result.rel_error_raw == 0.0 and result.rel_error_normalized == 0.0
    assert result.n_tokens == 6 * 11


def test_split_forward_reproduces_the_full_loss(tiny_model, token_set):
    clean = prepare_clean_pass(tiny_model, token_set, "blocks.0.hook_resid_post", batch_size=4)
    with torch.inference_mode():
        full = tiny_model(token_set.tokens, return_type="loss", loss_per_token=True)
    torch.testing.assert_close(clean.clean_loss, full, rtol=1e-5, atol=1e-5)
    _, cache = tiny_model.run_with_cache(token_set.tokens, names_filter="blocks.0.hook_resid_post")
    torch.testing.assert_close(clean.resid, cache["blocks.0.hook_resid_post"])


def test_destroying_activations_costs_loss(tiny_model, token_set):
    clean = prepare_clean_pass(tiny_model, token_set, "blocks.1.hook_resid_post", batch_size=4)
    normalizer = fit_normalizer(clean.rows)
    result = evaluate_reconstructor(tiny_model, clean, ZeroReconstructor(), normalizer)
    assert result.delta_lm.mean != 0.0
    assert result.rel_error_raw == pytest.approx(1.0)
    assert result.delta_lm.low <= result.delta_lm.mean <= result.delta_lm.high
    assert result.delta_lm.n == 3  # resampled over the three documents


def test_noise_condition_and_determinism(tiny_model, token_set):
    clean = prepare_clean_pass(tiny_model, token_set, "blocks.0.hook_resid_post", batch_size=4)
    normalizer = fit_normalizer(clean.rows)
    noise = Condition("noise", noise_std=0.5)
    first = evaluate_reconstructor(tiny_model, clean, IdentityReconstructor(), normalizer, noise)
    again = evaluate_reconstructor(tiny_model, clean, IdentityReconstructor(), normalizer, noise)
    assert first.delta_lm == again.delta_lm
    assert first.condition == "noise std=0.5"
    # Left alone, noise of std s in normalised space has relative size ~ s there.
    assert first.rel_error_normalized == pytest.approx(0.5, rel=0.25)
    assert first.delta_lm.mean != 0.0


def test_steer_condition_reports_how_much_of_the_vector_survives(tiny_model, token_set):
    clean = prepare_clean_pass(tiny_model, token_set, "blocks.0.hook_resid_post", batch_size=4)
    normalizer = fit_normalizer(clean.rows)
    gaussian = GaussianBaseline.fit(clean.rows, normalizer)
    vector = torch.randn(64, generator=torch.Generator().manual_seed(1))
    steer = Condition("steer", steer_vector=vector, steer_scale=2.0, steer_name="random")
    kept = evaluate_reconstructor(tiny_model, clean, IdentityReconstructor(), normalizer, steer)
    assert kept.extra["steer_retained"] == pytest.approx(1.0, rel=1e-4)
    assert kept.condition == "steer random scale=2"
    projected = evaluate_reconstructor(
        tiny_model, clean, PCAReconstructor(gaussian, 4), normalizer, steer
    )
    assert projected.extra["steer_retained"] < 0.9


def test_outlier_rows_are_left_unpatched(tiny_model, token_set):
    strict = prepare_clean_pass(
        tiny_model, token_set, "blocks.0.hook_resid_post", outlier_multiple=1.0001
    )
    loose = prepare_clean_pass(
        tiny_model, token_set, "blocks.0.hook_resid_post", outlier_multiple=None
    )
    assert not strict.patch_mask[:, 0].any() and not loose.patch_mask[:, 0].any()
    assert loose.patch_mask[:, 1:].all() and loose.n_outliers == 0
    assert strict.n_outliers > 0
    assert int(strict.patch_mask.sum()) + strict.n_outliers == int(loose.patch_mask.sum())


def test_token_sets_are_validated(tiny_model):
    with pytest.raises(ValueError, match="seq_len >= 3"):
        TokenSet("x", torch.zeros(2, 2, dtype=torch.long), torch.arange(2))
    with pytest.raises(ValueError, match="doc_ids"):
        TokenSet("x", torch.zeros(2, 5, dtype=torch.long), torch.arange(3))
    with pytest.raises(ValueError, match="tokenizer"):
        token_windows(tiny_model, ["text"], "x")
    with pytest.raises(ValueError, match="steer_vector"):
        Condition("steer")
    with pytest.raises(ValueError, match="Unknown hook name"):
        prepare_clean_pass(
            tiny_model,
            TokenSet("x", torch.zeros(1, 5, dtype=torch.long), torch.arange(1)),
            "blocks.9.hook_resid_post",
        )


@pytest.mark.slow
def test_default_model_windows_and_identity(default_model):
    from tl_diffusion_prior.evaluate.data import out_of_domain_texts

    texts = out_of_domain_texts()[:6]
    token_set = token_windows(default_model, texts, "pydoc", seq_len=32, max_windows=4)
    assert token_set.tokens.shape == (4, 32)
    assert (token_set.tokens[:, 0] == default_model.tokenizer.bos_token_id).all()
    clean = prepare_clean_pass(default_model, token_set, "blocks.15.hook_resid_post")
    normalizer = fit_normalizer(clean.rows)
    result = evaluate_reconstructor(default_model, clean, IdentityReconstructor(), normalizer)
    assert result.delta_lm.mean == 0.0
    assert 0.5 < float(clean.clean_loss[:, 1:].mean()) < 6.0
