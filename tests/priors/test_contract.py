"""One contract, run on every registered prior design (parametrised over PRIOR_REGISTRY)."""

import json

import pytest
import torch

from tl_diffusion_prior.constants import (
    CONFIG_NAME,
    FORMAT_VERSION,
    TRAINING_RECORD_NAME,
    WEIGHTS_NAME,
)
from tl_diffusion_prior.core.serialization import atomic_write_json, read_json
from tl_diffusion_prior.priors import (
    PRIOR_REGISTRY,
    DiffusionPrior,
    MLPPrior,
    PriorConfig,
    load_prior,
)

from .helpers import TINY_CONFIGS, TINY_D_MODEL, build_tiny_prior, randomize_

ARCHITECTURES = sorted(PRIOR_REGISTRY)
D = TINY_D_MODEL


@pytest.fixture(params=ARCHITECTURES)
def prior(request) -> DiffusionPrior:
    return randomize_(build_tiny_prior(request.param)).eval()


def raw_batch(prior, *shape, seed=1, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(*shape, prior.config.d_model, generator=gen)
    return prior.normalizer.denormalize(z).to(dtype)


def count_network_calls(prior):
    calls = []
    handle = prior.network.register_forward_hook(lambda *_: calls.append(1))
    return calls, handle


def test_registry_has_the_built_in_designs_and_tiny_configs():
    assert PRIOR_REGISTRY["mlp"] is MLPPrior
    for name, cls in PRIOR_REGISTRY.items():
        assert cls.architecture == name
        assert cls.config_class.expected_architecture == name
        assert name in TINY_CONFIGS, f"add tiny config overrides for {name!r} to helpers.py"


def test_config_round_trip_and_rejections(prior):
    data = json.loads(json.dumps(prior.config.to_dict()))
    assert data["architecture"] == prior.architecture
    assert data["format_version"] == FORMAT_VERSION
    again = PriorConfig.from_dict(data)
    assert type(again) is type(prior.config)
    assert again.to_dict() == data
    assert type(prior.config).from_dict(data).to_dict() == data
    with pytest.raises(ValueError, match="Unknown keys"):
        PriorConfig.from_dict({**data, "bogus": 1})
    with pytest.raises(ValueError, match="newer"):
        PriorConfig.from_dict({**data, "format_version": FORMAT_VERSION + 1})
    with pytest.raises(ValueError, match="Unknown prior architecture"):
        PriorConfig.from_dict({**data, "architecture": "transformer"})
    for other_name, other_cls in PRIOR_REGISTRY.items():
        if other_name != prior.architecture:
            with pytest.raises(ValueError, match="belongs to"):
                other_cls.config_class.from_dict(data)


def test_save_load_round_trip_gives_identical_outputs(prior, tmp_path):
    prior.record_training({"steps": 7})
    prior.save_pretrained(tmp_path / "p")
    assert (tmp_path / "p" / CONFIG_NAME).is_file()
    assert (tmp_path / "p" / WEIGHTS_NAME).is_file()
    # The run record sits beside the config, which describes the constructor only.
    assert read_json(tmp_path / "p" / TRAINING_RECORD_NAME) == {"steps": 7}
    assert "training" not in read_json(tmp_path / "p" / CONFIG_NAME)
    loaded = type(prior).from_pretrained(tmp_path / "p")
    assert type(loaded) is type(prior)
    assert loaded.config.to_dict() == prior.config.to_dict()
    assert loaded.normalizer.is_fitted
    assert not loaded.training
    assert loaded.training_record == {"steps": 7}
    for key, value in prior.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, rtol=0, atol=0)

    x = raw_batch(prior, 5)
    noise = torch.randn(5, D, generator=torch.Generator().manual_seed(2))
    for t_start, steps in [(0.5, 3), (1.0, 1)]:
        expected = prior.denoise(x, t_start=t_start, num_steps=steps, noise=noise)
        got = loaded.denoise(x, t_start=t_start, num_steps=steps, noise=noise)
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
    expected = prior.loss(x, generator=torch.Generator().manual_seed(3))
    got = loaded.loss(x, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    expected = prior.sample(4, num_steps=2, generator=torch.Generator().manual_seed(4))
    got = loaded.sample(4, num_steps=2, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_load_prior_dispatches_and_casts(prior, tmp_path):
    prior.save_pretrained(tmp_path / "p")
    for loaded in (load_prior(tmp_path / "p"), DiffusionPrior.from_pretrained(tmp_path / "p")):
        assert type(loaded) is type(prior)
    cast = load_prior(tmp_path / "p", dtype=torch.bfloat16)
    assert cast.dtype == torch.bfloat16
    assert cast.normalizer.mean.dtype == torch.float32
    torch.testing.assert_close(cast.normalizer.mean, prior.normalizer.mean, rtol=0, atol=0)
    # Saving again over an existing directory replaces it.
    cast.save_pretrained(tmp_path / "p")
    assert load_prior(tmp_path / "p").state_dict().keys() == prior.state_dict().keys()


def test_from_pretrained_rejects_other_architectures(prior, tmp_path):
    class OtherPrior(DiffusionPrior):  # never registered, so no saved prior can be one
        pass

    prior.save_pretrained(tmp_path / "p")
    with pytest.raises(ValueError, match="not a OtherPrior"):
        OtherPrior.from_pretrained(tmp_path / "p")
    for name, other_cls in PRIOR_REGISTRY.items():
        if name != prior.architecture:
            with pytest.raises(ValueError, match=f"not a {other_cls.__name__}"):
                other_cls.from_pretrained(tmp_path / "p")


def test_from_pretrained_rejects_mismatched_weights(prior, tmp_path):
    prior.save_pretrained(tmp_path / "p")
    data = read_json(tmp_path / "p" / CONFIG_NAME)
    data["d_model"] = D + 8
    atomic_write_json(tmp_path / "p" / CONFIG_NAME, data)
    with pytest.raises(ValueError, match="does not match"):
        load_prior(tmp_path / "p")
    with pytest.raises(FileNotFoundError, match=CONFIG_NAME):
        load_prior(tmp_path / "missing")


@pytest.mark.parametrize("shape", [(D,), (6, D), (2, 3, D)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_denoise_preserves_shape_dtype_device(prior, shape, dtype):
    x = raw_batch(prior, *shape[:-1], dtype=dtype)
    out = prior.denoise(x, t_start=0.5, num_steps=2, generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    assert out.dtype == dtype
    assert out.device == x.device
    assert torch.isfinite(out).all()
    assert not torch.equal(out, x)


def test_denoise_flattening_matches_per_token(prior):
    x = raw_batch(prior, 2, 3)
    noise = torch.randn(2, 3, D, generator=torch.Generator().manual_seed(5))
    batched = prior.denoise(x, t_start=0.4, num_steps=3, noise=noise)
    flat = prior.denoise(x.reshape(6, D), t_start=0.4, num_steps=3, noise=noise.reshape(6, D))
    torch.testing.assert_close(batched.reshape(6, D), flat, rtol=1e-5, atol=1e-5)


def test_bf16_prior_works_and_stays_close_to_float32(prior):
    x = raw_batch(prior, 8)
    noise = torch.randn(8, D, generator=torch.Generator().manual_seed(5))
    ref = prior.denoise(x, t_start=0.5, num_steps=3, noise=noise)
    half = prior.to(torch.bfloat16)
    out = half.denoise(x, t_start=0.5, num_steps=3, noise=noise)
    assert out.dtype == torch.float32
    scale = (ref - prior.normalizer.mean).abs().mean()
    assert (out - ref).abs().mean() < 0.1 * scale
    assert half.sample(3, num_steps=2).dtype == torch.bfloat16


def test_one_step_denoise_is_the_posterior_mean_estimate(prior):
    x = raw_batch(prior, 7)
    noise = torch.randn(7, D, generator=torch.Generator().manual_seed(6))
    for t in (0.3, 0.5, 1.0):
        out = prior.denoise(x, t_start=t, num_steps=1, noise=noise)
        with torch.no_grad():
            z_t = prior.add_noise(prior.normalizer.normalize(x), noise, t)
            expected = prior.normalizer.denormalize(prior.posterior_mean(z_t, t))
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("num_steps", [1, 3, 7])
def test_exactly_num_steps_network_evaluations(prior, num_steps):
    calls, handle = count_network_calls(prior)
    try:
        prior.denoise(raw_batch(prior, 2, 3), t_start=0.5, num_steps=num_steps)
        assert len(calls) == num_steps
        calls.clear()
        prior.denoise(raw_batch(prior, 4), t_start=1.0, num_steps=num_steps)
        assert len(calls) == num_steps
        calls.clear()
        prior.sample(3, num_steps=num_steps)
        assert len(calls) == num_steps
        calls.clear()
        prior.sample(2)
        assert len(calls) == prior.default_sample_steps
    finally:
        handle.remove()


def test_noise_and_generator_make_results_deterministic(prior):
    x = raw_batch(prior, 5)
    noise = torch.randn(5, D, generator=torch.Generator().manual_seed(7))
    first = prior.denoise(x, num_steps=2, noise=noise)
    torch.testing.assert_close(prior.denoise(x, num_steps=2, noise=noise), first, rtol=0, atol=0)
    # Drawn noise is standard normal in normalised space, taken from the generator.
    drawn = prior.denoise(x, num_steps=2, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(drawn, first, rtol=0, atol=0)
    other = prior.denoise(x, num_steps=2, generator=torch.Generator().manual_seed(8))
    assert not torch.allclose(other, first)

    a = prior.sample(4, num_steps=2, generator=torch.Generator().manual_seed(1))
    b = prior.sample(4, num_steps=2, generator=torch.Generator().manual_seed(1))
    assert a.shape == (4, D)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_works_under_inference_mode(prior):
    x = raw_batch(prior, 3)
    with torch.inference_mode():
        out = prior.denoise(x, num_steps=2)
        samples = prior.sample(2, num_steps=2)
    assert out.shape == x.shape and samples.shape == (2, D)


def test_loss_is_a_reproducible_differentiable_scalar(prior):
    prior.train()
    x = raw_batch(prior, 16)
    loss = prior.loss(x, generator=torch.Generator().manual_seed(9))
    assert loss.shape == () and torch.isfinite(loss)
    again = prior.loss(x, generator=torch.Generator().manual_seed(9))
    torch.testing.assert_close(again, loss, rtol=0, atol=0)
    other = prior.loss(x, generator=torch.Generator().manual_seed(10))
    assert not torch.equal(other, loss)
    loss.backward()
    grads = [p.grad for p in prior.parameters()]
    assert all(g is not None for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    assert prior.normalizer.mean.grad is None


def test_gaussian_reference_loss_is_a_positive_float(prior):
    ones = prior.gaussian_reference_loss(torch.ones(D, dtype=torch.float64))
    assert isinstance(ones, float) and ones > 0
    smaller = prior.gaussian_reference_loss(torch.full((D,), 0.25))
    assert 0 < smaller < ones


def test_bad_inputs_raise_clear_errors(prior):
    x = raw_batch(prior, 3)
    with pytest.raises(ValueError, match="d_model"):
        prior.denoise(torch.zeros(3, D + 1))
    with pytest.raises(ValueError, match="d_model"):
        prior.loss(torch.zeros(3, D - 1))
    for t_start in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="t_start"):
            prior.denoise(x, t_start=t_start)
    with pytest.raises(ValueError, match="num_steps"):
        prior.denoise(x, num_steps=0)
    with pytest.raises((ValueError, TypeError)):
        prior.denoise(x, noise=torch.zeros(4, D))
    with pytest.raises(TypeError):
        prior.denoise(torch.zeros(3, D, dtype=torch.int64))
    with pytest.raises(ValueError, match="n must"):
        prior.sample(0)
    with pytest.raises(ValueError, match="num_steps"):
        prior.sample(2, num_steps=0)


def test_check_compatible(prior):
    cfg = prior.config
    prior.check_compatible(hook_name=cfg.hook_name, d_model=cfg.d_model, model_name=cfg.model_name)
    with pytest.raises(ValueError, match="blocks.0.hook_resid_post"):
        prior.check_compatible(hook_name="blocks.1.hook_resid_post")
    with pytest.raises(ValueError, match="d_model"):
        prior.check_compatible(d_model=cfg.d_model + 1)
    with pytest.raises(ValueError, match="tiny-test"):
        prior.check_compatible(model_name="other-model")


def test_config_validation_rejects_bad_values(prior):
    data = prior.config.to_dict()
    for key, value in [("d_model", 0), ("hook_name", ""), ("norm_eps", -1.0)]:
        with pytest.raises(ValueError, match=key):
            PriorConfig.from_dict({**data, key: value})
    with pytest.raises(ValueError, match="JSON"):
        prior.record_training({"when": object()})
