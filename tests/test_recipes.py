"""What the demo, tutorials and benchmarks share (``tl_diffusion_prior.recipes``)."""

from __future__ import annotations

import time
from dataclasses import replace

from tests.training.helpers import filled_buffer, synthetic_activations, tiny_prior
from tl_diffusion_prior.recipes import SCALES, train_demo_prior


def test_demo_training_is_sized_in_samples_whatever_the_clock_says(tmp_path, monkeypatch):
    # A machine so busy that every step seems to take an hour must still train the same steps.
    clock = iter(range(0, 10**9, 3600))
    monkeypatch.setattr(time, "perf_counter", lambda: float(next(clock)))
    scale = replace(SCALES["quick"], batch_size=16, train_samples={"mlp": 96, "unet": 32})
    prior = tiny_prior()
    assert prior.config.architecture == "mlp"
    val = synthetic_activations(64, seed=1)
    result = train_demo_prior("mlp", prior, filled_buffer(), val, scale, tmp_path)
    assert result.steps == 96 // 16
    assert result.samples_seen == 96
    assert (tmp_path / "priors" / "mlp").is_dir()


def test_every_demo_scale_gives_each_design_at_least_one_batch():
    for scale in SCALES.values():
        assert set(scale.train_samples) == {"mlp", "unet"}
        assert min(scale.train_samples.values()) >= scale.batch_size
