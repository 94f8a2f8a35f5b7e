import json

import pytest
import torch

from tests.evaluate.helpers import correlated_gaussian, fitted_gaussian
from tl_diffusion_prior.capture.buffer import ActivationRingBuffer
from tl_diffusion_prior.evaluate.baselines.base import (
    BaselineConfig,
    activation_rows,
    fit_normalizer,
    load_baseline,
)
from tl_diffusion_prior.evaluate.baselines.gaussian import GaussianBaseline
from tl_diffusion_prior.evaluate.baselines.sae import TopKSAE


def test_gaussian_save_load_round_trip(tmp_path):
    x = correlated_gaussian(500, 8)
    g = fitted_gaussian(x)
    g.save_pretrained(tmp_path / "g")
    loaded = load_baseline(tmp_path / "g")
    assert isinstance(loaded, GaussianBaseline)
    assert loaded.config == g.config
    for name, tensor in g.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor, rtol=0, atol=0)
    torch.testing.assert_close(loaded.project(x, 3), g.project(x, 3))
    # Overwriting is atomic and leaves no temporary directory behind.
    g.save_pretrained(tmp_path / "g")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g"]


def test_loading_checks_kind_and_files(tmp_path):
    g = fitted_gaussian(correlated_gaussian(100, 4))
    g.save_pretrained(tmp_path / "g")
    with pytest.raises(ValueError, match="not a TopKSAE"):
        TopKSAE.from_pretrained(tmp_path / "g")
    with pytest.raises(FileNotFoundError):
        load_baseline(tmp_path / "missing")
    config = json.loads((tmp_path / "g" / "config.json").read_text())
    config["kind"] = "magic"
    (tmp_path / "g" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="Unknown baseline kind"):
        load_baseline(tmp_path / "g")


def test_config_rejects_unknown_keys_and_newer_versions():
    data = fitted_gaussian(correlated_gaussian(50, 4)).config.to_dict()
    with pytest.raises(ValueError, match="Unknown keys"):
        BaselineConfig.from_dict({**data, "extra": 1})
    with pytest.raises(ValueError, match="newer"):
        BaselineConfig.from_dict({**data, "format_version": 999})


def test_normalizer_from_buffer_uses_its_running_statistics():
    x = correlated_gaussian(300, 6)
    buffer = ActivationRingBuffer(100, 6)  # smaller than the data: the stats still cover all
    buffer.push(x)
    normalizer = fit_normalizer(buffer, eps=1e-5)
    x64 = x.double()
    torch.testing.assert_close(normalizer.mean, x64.mean(0).float())
    torch.testing.assert_close(normalizer.std, (x64.var(0, correction=0) + 1e-5).sqrt().float())
    assert activation_rows(buffer).shape == (100, 6)
    assert activation_rows(x, max_rows=10).shape == (10, 6)
    with pytest.raises(TypeError):
        activation_rows([1.0, 2.0])
