"""train_prior on a multi-layer GLP prior: a buffer holding several hooks per row, per-layer
statistics and references, clear errors, and an interrupted run resumed bit-identically."""

from __future__ import annotations

import pytest
import torch

from tests.training.helpers import synthetic_activations, tiny_config
from tests.training.test_trainer import SimulatedCrash, assert_same_tensors, crash_at
from tl_diffusion_prior.capture.buffer import ActivationRingBuffer
from tl_diffusion_prior.priors import glp_prior_for_hooks, load_prior
from tl_diffusion_prior.training import checkpoint as ckpt
from tl_diffusion_prior.training import train_prior
from tl_diffusion_prior.training.gaussian_reference import gaussian_reference
from tl_diffusion_prior.training.multi_layer import layer_views
from tl_diffusion_prior.training.validation import per_layer_scores

D = 8
HOOKS = ["blocks.0.hook_resid_post", "blocks.2.hook_resid_post"]


def multi_rows(n: int, seed: int = 0) -> torch.Tensor:
    """Two layers of the same ring data at very different scales and offsets: [n, 2, D]."""
    shallow = synthetic_activations(n, D, seed)
    deep = 30.0 * synthetic_activations(n, D, seed + 100).flip(1) - 50.0
    return torch.stack([shallow, deep], dim=1)


def multi_buffer(n: int = 512, hooks=HOOKS, seed: int = 0) -> ActivationRingBuffer:
    buffer = ActivationRingBuffer(n, D, hooks)
    buffer.push(multi_rows(n, seed))
    return buffer


def tiny_multi(seed: int = 0):
    torch.manual_seed(seed)
    return glp_prior_for_hooks(
        HOOKS, d_model=D, model_name="tiny-test", n_model_layers=3, depth=1, d_hidden=16, d_mlp=16
    )


def test_trains_with_per_layer_statistics_and_references():
    prior, buffer = tiny_multi(), multi_buffer()
    val = multi_rows(256, seed=7)
    result = train_prior(prior, buffer, tiny_config(steps=30), val_activations=val)
    assert result.final_val_loss < result.initial_val_loss
    for row, hook in enumerate(HOOKS):
        torch.testing.assert_close(prior.layer_stats.mean[row], buffer.mean(hook).float())
        std = torch.sqrt(buffer.var(hook) + 1e-5).float()
        torch.testing.assert_close(prior.layer_stats.std[row], std)
        torch.testing.assert_close(prior.at_hook(hook).normalizer.mean, buffer.mean(hook).float())
    fit_rows = buffer.sample(32768, torch.Generator().manual_seed(0), hook=list(range(2)))
    # The run's reference: the mean of each layer's own held-out reference.
    views = layer_views(prior, 2)
    references = [
        gaussian_reference(view, val[:64, i], fit_activations=fit_rows[:, i]).loss
        for i, view in enumerate(views)
    ]
    assert result.gaussian_reference == pytest.approx(sum(references) / 2, rel=0.02)
    assert references[0] != pytest.approx(references[1], rel=1e-3)
    assert prior.training_record["hook"] == HOOKS
    scores = per_layer_scores(views, val, fit_rows, tiny_config())
    assert [s.hook_name for s in scores] == HOOKS
    assert sum(s.val_loss for s in scores) / 2 == pytest.approx(result.final_val_loss, rel=0.05)
    assert all(s.ratio > 0 for s in scores)


def test_single_layer_glp_trains_on_one_hook_of_the_same_buffer():
    """The benchmark's per-layer baseline: same architecture, one hook of the multi-hook buffer."""
    torch.manual_seed(0)
    prior = glp_prior_for_hooks(HOOKS[1:], d_model=D, model_name="tiny-test", depth=1, d_hidden=16)
    buffer = multi_buffer()
    val = multi_rows(256, seed=7)[:, 1]
    result = train_prior(prior, buffer, tiny_config(steps=30), val_activations=val, hook=HOOKS[1])
    assert result.final_val_loss < result.initial_val_loss
    torch.testing.assert_close(prior.normalizer.mean, buffer.mean(HOOKS[1]).float())
    assert prior.training_record["hook"] == HOOKS[1]


def test_trained_prior_round_trips_and_its_views_denoise(tmp_path):
    prior = tiny_multi()
    train_prior(prior, multi_buffer(), tiny_config(steps=4))
    prior.save_pretrained(tmp_path / "p")
    loaded = load_prior(tmp_path / "p")
    assert loaded.config.layers == (0, 2) and loaded.training_record["hook"] == HOOKS
    assert_same_tensors(prior.state_dict(), loaded.state_dict())
    x, noise = multi_rows(4)[:, 1], torch.randn(4, D)
    out = loaded.at_layer(2).denoise(x, noise=noise)
    assert torch.equal(out, prior.at_layer(2).denoise(x, noise=noise))


def test_buffer_without_the_hooks_and_hook_argument_are_refused_before_training():
    prior = tiny_multi()
    buffer = multi_buffer(hooks=["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"])
    with pytest.raises(ValueError, match=r"missing \['blocks.2.hook_resid_post'\]"):
        train_prior(prior, buffer, tiny_config())
    with pytest.raises(ValueError, match="trains on all of"):
        train_prior(prior, multi_buffer(), tiny_config(), hook=HOOKS[0])
    with pytest.raises(ValueError, match=r"\[n, 2, 8\]"):
        train_prior(prior, multi_buffer(), tiny_config(), val_activations=torch.randn(64, D))
    assert not prior.normalizer.is_fitted  # every one refused before any work


def _run(tmp_path, name, crash=None):
    prior, buffer = tiny_multi(), multi_buffer(256)
    config = tiny_config(checkpoint_dir=tmp_path / name)
    result = train_prior(prior, buffer, config, callback=crash)
    return prior, result


def test_resume_after_crash_is_bit_identical(tmp_path):
    prior_a, result_a = _run(tmp_path, "a")
    with pytest.raises(SimulatedCrash):
        _run(tmp_path, "b", crash=crash_at(7))
    assert ckpt.latest_checkpoint(tmp_path / "b").name == "step_00000004"
    prior_b, result_b = _run(tmp_path, "b")
    assert result_b.steps == result_a.steps == 12
    assert_same_tensors(prior_a.state_dict(), prior_b.state_dict())
    assert [r["train_loss"] for r in result_a.history] == [
        r["train_loss"] for r in result_b.history
    ]
    assert result_a.gaussian_reference == result_b.gaussian_reference
