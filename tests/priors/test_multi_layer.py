"""A GLP prior over several layers built here: config, per-layer statistics, its loss, round trip,
single-layer views and steering at two layers with the right layer's statistics."""

from __future__ import annotations

import pytest
import torch

from tl_diffusion_prior.priors import GLPPrior, GLPPriorConfig, load_prior
from tl_diffusion_prior.priors.glp_network import training_sigmas
from tl_diffusion_prior.priors.multi_layer import glp_prior_for_hooks, layers_of_hooks
from tl_diffusion_prior.steering import steer

D = 8
HOOKS = ["blocks.1.hook_resid_post", "blocks.3.hook_resid_post"]


def tiny_multi(hooks=HOOKS, d_model=D, model_name="tiny", n_model_layers=5, seed=0) -> GLPPrior:
    torch.manual_seed(seed)
    prior = glp_prior_for_hooks(
        hooks,
        d_model=d_model,
        model_name=model_name,
        n_model_layers=n_model_layers,
        depth=1,
        d_hidden=16,
        d_mlp=16,
    )
    # A fresh network's output layer is zero; random weights make every test see the network.
    with torch.no_grad():
        for p in prior.network.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return prior


def layer_stats(n_layers=2, d_model=D):
    gen = torch.Generator().manual_seed(5)
    mean = (
        torch.randn(n_layers, d_model, generator=gen) * 10 * torch.arange(1, n_layers + 1)[:, None]
    )
    var = (
        torch.rand(n_layers, d_model, generator=gen) * 4
        + 0.5
        + 20 * torch.arange(n_layers)[:, None]
    )
    return mean, var


def test_prior_for_hooks_builds_a_multi_layer_config_over_a_subset():
    prior = tiny_multi()
    cfg = prior.config
    assert prior.is_multi_layer and cfg.layers == (1, 3) and cfg.layer_positions == 5
    assert cfg.layer is None and cfg.hook_name == "blocks.*.hook_resid_post"
    assert prior.layer_hooks == tuple(HOOKS) and cfg.norm_eps == 1e-5
    single = glp_prior_for_hooks(HOOKS[:1], d_model=D, model_name="tiny")
    assert not single.is_multi_layer and single.config.hook_name == HOOKS[0]
    assert single.network.layer_embed is None and prior.network.layer_embed is not None
    # Without n_model_layers, the deepest hook is the last position.
    assert glp_prior_for_hooks(HOOKS, d_model=D, model_name="t").config.layer_positions == 4


@pytest.mark.parametrize(
    "hooks, match",
    [
        (["blocks.3.hook_resid_post", "blocks.1.hook_resid_post"], "shallowest first"),
        (["blocks.1.hook_resid_post", "blocks.1.hook_resid_post"], "each layer once"),
        (["blocks.1.hook_resid_post", "blocks.3.hook_resid_pre"], "same point"),
        (["blocks.1.attn.hook_z", "blocks.3.hook_resid_post"], "hook_resid_post"),
        ("blocks.1.hook_resid_post", "non-empty list"),
    ],
)
def test_bad_hook_lists_are_refused(hooks, match):
    with pytest.raises(ValueError, match=match):
        layers_of_hooks(hooks)


def test_too_few_model_layers_and_bad_layer_subsets_are_refused():
    with pytest.raises(ValueError, match="n_model_layers"):
        glp_prior_for_hooks(HOOKS, d_model=D, model_name="t", n_model_layers=3)
    fields = dict(d_model=D, hook_name="blocks.*.hook_resid_post", model_name="t", d_hidden=8)
    fields.update(d_mlp=8, depth=1, layer_positions=5)
    for layers in [(3, 1), (1, 5), (2,)]:
        with pytest.raises(ValueError, match="strictly increasing subset"):
            GLPPriorConfig(layers=layers, **fields)


def test_per_layer_statistics_and_views_of_each_layer():
    prior = tiny_multi()
    mean, var = layer_stats()
    prior.set_normalization(mean, var)
    assert prior.normalizer.is_fitted
    for row, hook in enumerate(HOOKS):
        view = prior.at_hook(hook)
        assert view.config.hook_name == hook and view.network is prior.network
        torch.testing.assert_close(view.normalizer.mean, mean[row])
        torch.testing.assert_close(
            view.normalizer.std, torch.sqrt(var[row].double() + 1e-5).float()
        )
    with pytest.raises(ValueError, match=r"covers layers \[1, 3\], not layer 2"):
        prior.at_hook("blocks.2.hook_resid_post")
    with pytest.raises(ValueError, match="one of this prior's hooks"):
        prior.at_hook("blocks.1.hook_resid_pre")
    with pytest.raises(ValueError, match=r"shape \(2, 8\)"):
        prior.set_normalization(mean[0], var[0])
    with pytest.raises(ValueError, match="negative variance"):
        prior.set_normalization(mean, -var)


def test_loss_with_levels_is_the_mean_of_each_layers_flow_loss():
    """Reference: every (row, layer) pair noised and scored by hand with that layer's statistics
    and depth; the multi-layer loss draws its noise in that order."""
    prior = tiny_multi()
    mean, var = layer_stats()
    prior.set_normalization(mean, var)
    x = mean + var.sqrt() * torch.randn(6, 2, D, generator=torch.Generator().manual_seed(1))
    levels = torch.linspace(0.05, 0.95, 6)
    got = prior.loss(x, generator=torch.Generator().manual_seed(7), levels=levels)

    eps = torch.randn(12, D, generator=torch.Generator().manual_seed(7))
    grid = training_sigmas(1000)
    errors = []
    for i in range(6):
        t = grid[(levels[i] * 1000).long()].reshape(1)
        for j, layer in enumerate((1, 3)):
            z = (x[i, j] - mean[j]) / torch.sqrt(var[j] + 1e-5)
            noise = eps[i * 2 + j]
            z_t = ((1 - t) * z + t * noise)[None]
            depth = torch.tensor([layer / 4.0])
            v = prior.network(z_t, prior.network.time_modulation(t, depth), t)
            errors.append((v[0] - (noise - z)).square().mean())
    torch.testing.assert_close(got, torch.stack(errors).mean(), rtol=1e-5, atol=1e-6)


def test_training_loss_draws_a_layer_per_row_and_refuses_other_shapes():
    prior = tiny_multi()
    prior.set_normalization(*layer_stats())
    x = torch.randn(16, 2, D)
    loss = prior.loss(x, generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss) and prior.network.layer_embed[0].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match=r"\[batch, 2, 8\]"):
        prior.loss(torch.randn(16, D))
    with pytest.raises(ValueError, match="levels must be"):
        prior.loss(x, levels=torch.full((16,), 1.0))
    with pytest.raises(ValueError, match="at_layer"):
        prior.denoise(torch.randn(3, D))


def test_save_load_round_trip_keeps_layers_statistics_and_outputs(tmp_path):
    prior = tiny_multi()
    prior.set_normalization(*layer_stats())
    prior.save_pretrained(tmp_path / "multi")
    loaded = load_prior(tmp_path / "multi")
    assert type(loaded) is GLPPrior and loaded.config == prior.config
    for name, tensor in prior.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name
    x = torch.randn(5, 2, D) * 3
    levels = torch.full((5,), 0.3)
    a = prior.loss(x, torch.Generator().manual_seed(2), levels)
    b = loaded.loss(x, torch.Generator().manual_seed(2), levels)
    assert torch.equal(a, b)
    noise = torch.randn(4, D)
    rows = torch.randn(4, D)
    assert torch.equal(
        prior.at_layer(3).denoise(rows, noise=noise), loaded.at_layer(3).denoise(rows, noise=noise)
    )


def test_steering_at_two_layers_uses_each_layers_statistics(tiny_model):
    """A fresh network's velocity is 0 (zero-initialised output), so a view's denoising is
    ``(1 - t) x + t (mean_L + std_L noise)``: the layer's own statistics, checked exactly."""
    d = tiny_model.cfg.d_model
    hooks = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    prior = glp_prior_for_hooks(
        hooks, d_model=d, model_name=tiny_model.cfg.model_name, depth=1, d_hidden=16, d_mlp=16
    )
    mean, var = layer_stats(2, d)
    prior.set_normalization(mean, var)
    tokens = torch.randint(3, 300, (2, 5), generator=torch.Generator().manual_seed(0))
    vector = torch.randn(d, generator=torch.Generator().manual_seed(1))
    with pytest.raises(ValueError, match=r"use prior.at_layer\(L\)"):
        with steer(tiny_model, hooks[0], vector, 0.5, prior):
            pass
    for row, hook in enumerate(hooks):
        view = prior.at_hook(hook)
        seen = []
        denoise = view.denoise

        def recording(x, *args, _denoise=denoise, _seen=seen, **kwargs):
            out = _denoise(x, *args, **kwargs)
            _seen.append((x.clone(), kwargs["noise"].clone(), out.clone()))
            return out

        view.denoise = recording
        with steer(tiny_model, hook, vector, 0.5, view, scale_mode="relative", t_start=0.5):
            tiny_model(tokens)
        assert len(seen) == 1
        x, noise, out = seen[0]
        std = torch.sqrt(var[row].double() + 1e-5).float()
        expected = 0.5 * x + 0.5 * (mean[row] + std * noise.reshape(x.shape))
        torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-3)
        other = 0.5 * x + 0.5 * (mean[1 - row] + std * noise.reshape(x.shape))
        assert not torch.allclose(out, other, rtol=1e-4, atol=1e-3)
    with pytest.raises(ValueError, match="trained on 'blocks.1.hook_resid_post'"):
        with steer(tiny_model, hooks[0], vector, 0.5, prior.at_layer(1)):
            pass
