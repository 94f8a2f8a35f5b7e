"""The paper's released checkpoints load as a GLPPrior that computes what the release computes.

Every checkpoint here is written in the release's layout (``glp_release.py``) and every expected
value comes from the independent float64 reference there, not from the package.
"""

from __future__ import annotations

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from tl_diffusion_prior.constants import MODEL_CARD_NAME
from tl_diffusion_prior.priors import GLPPrior, load_prior, paper_steering_schedule

from .glp_release import (
    D_INPUT,
    flat_stats,
    reference_on_manifold,
    reference_sample,
    reference_velocity,
    release_config,
    release_statistics,
    release_tensors,
    write_release,
)

TOL = dict(rtol=1e-5, atol=1e-5)


def _x(n=5, seed=3):
    return 4 * torch.randn(n, D_INPUT, generator=torch.Generator().manual_seed(seed))


def _noise(n=5, seed=4):
    return torch.randn(n, D_INPUT, generator=torch.Generator().manual_seed(seed))


def test_config_maps_layer_to_hook_and_sizes(tmp_path):
    stats = release_statistics(None)
    prior = load_prior(write_release(tmp_path / "glp", stats=stats))
    # The release's z-score: its mean and sqrt of its (population) variance, no epsilon; the
    # square root correctly rounded (torch's float32 CPU sqrt can be one ulp off).
    torch.testing.assert_close(prior.normalizer.mean, stats["mean"], rtol=0, atol=0)
    exact_std = stats["var"].double().sqrt().float()
    torch.testing.assert_close(prior.normalizer.std, exact_std, rtol=0, atol=0)
    assert type(prior) is GLPPrior
    cfg = prior.config
    assert cfg.hook_name == "blocks.7.hook_resid_post" and cfg.layers == (7,) and cfg.layer == 7
    assert cfg.model_name == "meta-llama/Llama-3.2-1B"
    # A HookedTransformer names it Llama-3.2-1B, a TransformerBridge meta-llama/Llama-3.2-1B.
    for name in ("Llama-3.2-1B", "meta-llama/Llama-3.2-1B"):
        prior.check_compatible(hook_name="blocks.7.hook_resid_post", model_name=name)
    with pytest.raises(ValueError, match="trained on 'meta-llama/Llama-3.2-1B' activations"):
        prior.check_compatible(model_name="Llama-3.2-3B")
    # The 8B release names the model by its old hub id, TransformerLens by the new one.
    config = release_config(model_name="meta-llama/Meta-Llama-3.1-8B")
    llama8b = load_prior(write_release(tmp_path / "8b", config))
    for name in ("Llama-3.1-8B", "meta-llama/Llama-3.1-8B", "Meta-Llama-3.1-8B"):
        llama8b.check_compatible(model_name=name)
    with pytest.raises(ValueError, match="not 'Llama-3.1-70B'"):
        llama8b.check_compatible(model_name="Llama-3.1-70B")
    assert (cfg.d_model, cfg.d_hidden, cfg.d_mlp, cfg.depth) == (6, 12, 16, 2)
    assert cfg.layer_positions is None and not prior.training
    assert prior.dtype == torch.float32
    record = prior.training_record
    assert record["source"]["checkpoint"] == "final.safetensors"
    assert record["release_config"]["learning_rate"] == 5e-5
    assert "weights_only" in record["statistics"]


def test_velocity_matches_the_reference_block_equations(tmp_path):
    tensors = release_tensors()
    prior = load_prior(write_release(tmp_path / "glp", tensors=tensors))
    z = torch.randn(4, D_INPUT, generator=torch.Generator().manual_seed(0))
    for sigma in (0.001, 0.25, 0.4742105, 1.0):
        t = torch.full((4,), sigma)
        with torch.no_grad():
            ours = prior.network(z, prior.network.time_modulation(t), t)
        expected = reference_velocity(tensors, z, (t * 1000).float())
        torch.testing.assert_close(ours.double(), expected, **TOL)
    # One Euler step from t is the release's clean estimate z_t - t v, through the public API.
    stats = release_statistics(None)
    prior = load_prior(write_release(tmp_path / "b", tensors=tensors, stats=stats))
    mean, var = flat_stats(stats)
    x, noise = _x(), _noise()
    z = (x.double() - mean) / var.sqrt()
    z_t = 0.7 * z + 0.3 * noise.double()
    v = reference_velocity(tensors, z_t, torch.full((5,), 0.3).float() * 1000)
    expected = (z_t - 0.3 * v) * var.sqrt() + mean
    got = prior.denoise(x, t_start=0.3, num_steps=1, noise=noise)
    torch.testing.assert_close(got.double(), expected, **TOL)


def test_on_manifold_and_sample_follow_the_release_schedule(tmp_path):
    tensors, stats = release_tensors(), release_statistics(None)
    prior = load_prior(write_release(tmp_path / "glp", tensors=tensors, stats=stats))
    mean, var = flat_stats(stats)
    x, noise = _x(), _noise()
    t_start, num_steps = paper_steering_schedule()
    assert num_steps == 10 and t_start == pytest.approx(1 - 10 * 0.999 / 19)
    got = prior.denoise(x, t_start=t_start, num_steps=num_steps, noise=noise)
    torch.testing.assert_close(
        got.double(), reference_on_manifold(tensors, mean, var, x, noise), **TOL
    )
    # The paper's text setting is not what its code runs: a plain t = 0.5 differs.
    plain = prior.denoise(x, t_start=0.5, num_steps=10, noise=noise)
    assert not torch.allclose(plain, got, atol=1e-3)
    for u, n in [(0.25, 8), (0.9, 20)]:
        t_start, num_steps = paper_steering_schedule(u, n)
        got = prior.denoise(x, t_start=t_start, num_steps=num_steps, noise=noise)
        expected = reference_on_manifold(tensors, mean, var, x, noise, u=u, num_timesteps=n)
        torch.testing.assert_close(got.double(), expected, **TOL)
    samples = prior.sample(3, num_steps=7, generator=torch.Generator().manual_seed(5))
    drawn = torch.randn(3, D_INPUT, generator=torch.Generator().manual_seed(5))
    expected = reference_sample(tensors, mean, var, drawn, num_timesteps=7)
    torch.testing.assert_close(samples.double(), expected, **TOL)
    assert prior.default_sample_steps == 20


def test_multi_layer_checkpoint_picks_a_layer(tmp_path):
    config = release_config(layers=range(4), multi_layer_n_layers=4)
    tensors, stats = release_tensors(multi=True), release_statistics(4)
    prior = load_prior(write_release(tmp_path / "multi", config, tensors, stats))
    assert prior.config.layer is None and prior.config.hook_name == "blocks.*.hook_resid_post"
    x, noise = _x(), _noise()
    with pytest.raises(ValueError, match=r"at_layer\(L\)"):
        prior.denoise(x, noise=noise)
    with pytest.raises(ValueError, match=r"at_layer\(L\)"):
        prior.check_compatible(hook_name="blocks.2.hook_resid_post")
    with pytest.raises(ValueError, match=r"covers layers \[0, 1, 2, 3\], not layer 5"):
        prior.at_layer(5)
    layer2 = prior.at_layer(2)
    assert layer2.config.hook_name == "blocks.2.hook_resid_post" and layer2.config.layer == 2
    assert layer2.network is prior.network  # shared weights, not a copy
    layer2.check_compatible(hook_name="blocks.2.hook_resid_post", d_model=D_INPUT)
    t_start, num_steps = paper_steering_schedule()
    mean, var = flat_stats(stats, row=2)
    expected = reference_on_manifold(tensors, mean, var, x, noise, layer_idx=2, n_positions=4)
    got = layer2.denoise(x, t_start=t_start, num_steps=num_steps, noise=noise)
    torch.testing.assert_close(got.double(), expected, **TOL)
    # Another layer uses its own statistics and depth embedding.
    other = prior.at_layer(3).denoise(x, t_start=t_start, num_steps=num_steps, noise=noise)
    assert not torch.allclose(other, got)


def test_round_trip_through_our_format_changes_nothing(tmp_path):
    prior = load_prior(write_release(tmp_path / "glp"))
    prior.save_pretrained(tmp_path / "ours")
    assert (tmp_path / "ours" / "config.json").is_file()
    assert not list((tmp_path / "ours").glob("*.pt"))
    again = load_prior(tmp_path / "ours")
    assert type(again) is GLPPrior and again.config == prior.config
    assert again.training_record == prior.training_record
    assert again.state_dict().keys() == prior.state_dict().keys()
    for key, value in prior.state_dict().items():
        torch.testing.assert_close(again.state_dict()[key], value, rtol=0, atol=0)
    x, noise = _x(), _noise()
    for t, n in [paper_steering_schedule(), (1.0, 3)]:
        expected = prior.denoise(x, t_start=t, num_steps=n, noise=noise)
        torch.testing.assert_close(
            again.denoise(x, t_start=t, num_steps=n, noise=noise), expected, rtol=0, atol=0
        )
    card = (tmp_path / "ours" / MODEL_CARD_NAME).read_text()
    assert "blocks.7.hook_resid_post" in card and "meta-llama/Llama-3.2-1B" in card
    assert "Converted from (checkpoint) | final.safetensors" in card


def test_multi_layer_round_trip_keeps_every_layer(tmp_path):
    config = release_config(layers=range(3), multi_layer_n_layers=3)
    prior = load_prior(write_release(tmp_path / "multi", config))
    prior.at_layer(1).save_pretrained(tmp_path / "ours")
    again = load_prior(tmp_path / "ours")
    assert again.config.layer == 1 and again.config.hook_name == "blocks.1.hook_resid_post"
    x, noise = _x(), _noise()
    for layer in (0, 1, 2):
        expected = prior.at_layer(layer).denoise(x, num_steps=3, noise=noise)
        got = again.at_layer(layer).denoise(x, num_steps=3, noise=noise)
        torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_intermediate_checkpoints_and_retain_input(tmp_path):
    config = release_config()
    config["glp_kwargs"]["tracedict_config"]["retain"] = "input"
    folder = write_release(tmp_path / "glp", config, name="checkpoints/epoch_0002")
    save_file(release_tensors(seed=9), folder / "final.safetensors")
    epoch = load_prior(folder, checkpoint="epoch_0002")
    final = load_prior(folder)
    assert epoch.config.hook_name == "blocks.7.hook_resid_pre"
    assert epoch.training_record["source"]["checkpoint"] == "checkpoints/epoch_0002.safetensors"
    x, noise = _x(), _noise()
    assert not torch.allclose(epoch.denoise(x, noise=noise), final.denoise(x, noise=noise))
    with pytest.raises(FileNotFoundError, match=r"epoch_0064.*checkpoints/epoch_0002.safetensors"):
        load_prior(folder, checkpoint="epoch_0064")


# ------------------------------------------------------------------------------ clear errors
def _edit_config(edit):
    config = release_config()
    edit(config["glp_kwargs"], config)
    return config


@pytest.mark.parametrize(
    "edit, match",
    [
        (
            lambda g, c: g["denoiser_config"].update(dropout=0.1),
            r"unknown field\(s\) \['dropout'\]",
        ),
        (
            lambda g, c: g.update(sampler_config={}),
            r"unknown glp_kwargs field\(s\) \['sampler_config'\]",
        ),
        (lambda g, c: g["denoiser_config"].pop("d_mlp"), r"lacks \['d_mlp'\]"),
        (lambda g, c: g["denoiser_config"].update(d_model="${x}"), "unresolved interpolation"),
        (lambda g, c: g["tracedict_config"].update(layer_prefix="gpt_neox.layers"), "layer_prefix"),
        (lambda g, c: g["tracedict_config"].update(layers=[]), "tracedict_config.layers"),
        (lambda g, c: g["tracedict_config"].update(retain="both"), "retain must be one of"),
        (lambda g, c: c.pop("model_name"), "model_name must name the source model"),
        (lambda g, c: g["denoiser_config"].update(d_model=13), "d_hidden must be even"),
    ],
)
def test_bad_config_fields_are_named(tmp_path, edit, match):
    folder = write_release(tmp_path / "glp", _edit_config(edit))
    with pytest.raises(ValueError, match=match):
        load_prior(folder)


def test_multi_layer_config_must_cover_layers_from_zero(tmp_path):
    config = release_config(layers=[4, 5, 6], multi_layer_n_layers=3)
    with pytest.raises(ValueError, match=r"must cover layers 0..2"):
        load_prior(write_release(tmp_path / "multi", config))


@pytest.mark.parametrize(
    "edit, match",
    [
        (
            lambda t: t.pop("model.layers.1.up_proj.weight"),
            r"missing keys \['model.layers.1.up_proj.weight'\]",
        ),
        (
            lambda t: t.update({"model.extra.weight": torch.zeros(2)}),
            r"unexpected keys \['model.extra.weight'\]",
        ),
        (
            lambda t: t.update({"model.in_proj.weight": t["model.in_proj.weight"].T.contiguous()}),
            r"model.in_proj.weight has shape \[6, 12\], expected \[12, 6\]",
        ),
        (
            lambda t: t.update({"model.layer_embed.0.weight": torch.zeros(12, 12)}),
            "unexpected keys",
        ),
    ],
)
def test_wrong_weights_are_named_before_loading(tmp_path, edit, match):
    tensors = release_tensors()
    edit(tensors)
    with pytest.raises(ValueError, match=match) as info:
        load_prior(write_release(tmp_path / "glp", tensors=tensors))
    assert "same checkpoint" in str(info.value)


@pytest.mark.parametrize(
    "stats, match",
    [
        ({"mean": torch.zeros(5), "var": torch.ones(5)}, r"mean has shape \[5\], expected \[6\]"),
        ({"mean": torch.zeros(6)}, r"keys \['mean', 'var'\], got \['mean'\]"),
        ({"mean": torch.zeros(6), "var": torch.ones(6), "std": torch.ones(6)}, "keys"),
        ({"mean": torch.zeros(6), "var": -torch.ones(6)}, "negative"),
        ({"mean": torch.zeros(6), "var": torch.full((6,), float("nan"))}, "NaN"),
        ([torch.zeros(6)], "dict"),
    ],
)
def test_bad_statistics_are_named(tmp_path, stats, match):
    with pytest.raises(ValueError, match=match):
        load_prior(write_release(tmp_path / "glp", stats=stats))


RAN = []


def _mark(tag):
    RAN.append(tag)


class _Payload:
    """Unpickling this would run code (``_mark``); a weights-only reader must refuse it."""

    def __reduce__(self):
        return (_mark, ("unpickled",))


def test_statistics_pickle_never_runs_code(tmp_path):
    folder = write_release(tmp_path / "glp")
    stats = {"mean": torch.zeros(6), "var": torch.ones(6), "hook": _Payload()}
    with open(folder / "rep_statistics.pt", "wb") as f:
        torch.save(stats, f)
    with pytest.raises(ValueError, match="could not be read as plain tensors"):
        load_prior(folder)
    assert RAN == []
    # The same file under a plain unpickler runs the payload: the test would notice a leak.
    torch.load(folder / "rep_statistics.pt", weights_only=False)
    assert RAN == ["unpickled"]
    RAN.clear()


def test_damaged_files_are_named(tmp_path):
    folder = write_release(tmp_path / "glp")
    stats = (folder / "rep_statistics.pt").read_bytes()
    (folder / "rep_statistics.pt").write_bytes(stats[: len(stats) // 2])
    with pytest.raises(ValueError, match="rep_statistics.pt could not be read as plain tensors"):
        load_prior(folder)
    folder = write_release(tmp_path / "glp2")
    (folder / "final.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="final.safetensors is not a readable safetensors file"):
        load_prior(folder)


def test_weights_in_bf16_load_as_float32(tmp_path):
    tensors = {k: v.to(torch.bfloat16) for k, v in release_tensors().items()}
    prior = load_prior(write_release(tmp_path / "glp", tensors=tensors))
    assert prior.dtype == torch.float32
    stored = load_file(tmp_path / "glp" / "final.safetensors")["model.in_proj.weight"]
    torch.testing.assert_close(prior.network.in_proj.weight, stored.float(), rtol=0, atol=0)


def test_config_yaml_must_be_a_release_config(tmp_path):
    folder = write_release(tmp_path / "glp")
    (folder / "config.yaml").write_text(yaml.safe_dump({"model_name": "x"}))
    with pytest.raises(ValueError, match="no glp_kwargs"):
        load_prior(folder)
    (folder / "config.yaml").write_text("glp_kwargs: [unclosed")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_prior(folder)
