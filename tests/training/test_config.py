import math

import pytest

from tl_diffusion_prior.training.config import TrainConfig, get_lr


def test_lr_warmup_peak_and_cosine_floor():
    config = TrainConfig(steps=1000, lr=1e-3, warmup_fraction=0.01, min_lr_ratio=0.1)
    assert config.warmup_steps == 10
    warmup = [get_lr(s, config) for s in range(10)]
    assert warmup[0] == pytest.approx(1e-3 / 11)
    diffs = [b - a for a, b in zip(warmup, warmup[1:], strict=False)]
    assert all(d == pytest.approx(1e-3 / 11) for d in diffs)  # linear
    assert get_lr(10, config) == pytest.approx(1e-3)  # peak right after warm-up
    decay = [get_lr(s, config) for s in range(10, 1000)]
    assert all(a >= b for a, b in zip(decay, decay[1:], strict=False))  # monotone
    assert get_lr(999, config) == pytest.approx(1e-4)  # floor at the last step
    assert get_lr(5000, config) == pytest.approx(1e-4)  # and beyond
    midpoint = 10 + (999 - 10) / 2
    assert get_lr(int(midpoint), config) == pytest.approx(5.5e-4, rel=1e-2)  # cosine half-way


def test_lr_without_warmup_and_single_step():
    config = TrainConfig(steps=100, lr=2e-3, warmup_fraction=0.0)
    assert get_lr(0, config) == pytest.approx(2e-3)
    assert get_lr(99, config) == pytest.approx(2e-4)
    assert get_lr(0, TrainConfig(steps=1, lr=1e-3)) == pytest.approx(1e-3)


def test_dict_round_trip():
    config = TrainConfig(steps=10, betas=(0.8, 0.9), checkpoint_dir="/tmp/x", time_budget_s=5.0)
    data = config.to_dict()
    assert data["betas"] == [0.8, 0.9]
    assert TrainConfig.from_dict(data) == config
    with pytest.raises(ValueError, match="Unknown TrainConfig keys"):
        TrainConfig.from_dict({**data, "learning_rate": 1.0})


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("steps", 0, "steps must be an int >= 1"),
        ("batch_size", 1.5, "batch_size"),
        ("lr", 0.0, "lr must be >"),
        ("lr", math.nan, "finite"),
        ("ema_decay", 1.0, "ema_decay must be <"),
        ("warmup_fraction", 1.5, "warmup_fraction"),
        ("autocast", "fp16", "autocast must be one of"),
        ("betas", (0.9,), "betas"),
        ("refill_fraction", 0.0, "refill_fraction"),
        ("time_budget_s", -1.0, "time_budget_s"),
    ],
)
def test_invalid_values_are_rejected(field, value, message):
    with pytest.raises((ValueError, TypeError), match=message):
        TrainConfig(**{field: value})
