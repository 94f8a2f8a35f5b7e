import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.training.helpers import (
    D_MODEL,
    CountingTokenSource,
    filled_buffer,
    synthetic_activations,
    tiny_config,
    tiny_prior,
)
from tl_diffusion_prior.capture import make_refill
from tl_diffusion_prior.capture.buffer import ActivationRingBuffer
from tl_diffusion_prior.capture.capture import ActivationCapture, CaptureConfig, fill_buffer
from tl_diffusion_prior.constants import LOSS_CSV_NAME, LOSS_PNG_NAME
from tl_diffusion_prior.priors import load_prior
from tl_diffusion_prior.training import NonFiniteLossError, train_prior
from tl_diffusion_prior.training import checkpoint as ckpt
from tl_diffusion_prior.training.loss_log import read_loss_csv


class SimulatedCrash(RuntimeError):
    pass


def crash_at(step):
    def callback(done):
        if done == step:
            raise SimulatedCrash(f"killed at step {done}")

    return callback


def assert_same_tensors(a: dict, b: dict):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_train_reports_val_loss_and_gaussian_reference():
    prior = tiny_prior()
    val = synthetic_activations(256, seed=99)
    result = train_prior(prior, filled_buffer(), tiny_config(), val_activations=val)

    assert result.stopped_reason == "completed"
    assert result.steps == 12 and result.samples_seen == 12 * 32
    assert math.isfinite(result.final_val_loss)
    # The reference is a Gaussian fitted on training rows (a resample of the buffer) and scored
    # on the validation rows: close to one fitted on the whole buffer, and above the in-sample
    # reference of the validation rows themselves, which is biased low.
    z_train = (filled_buffer().filled_rows(0).double() - prior.normalizer.mean.double()) / (
        prior.normalizer.std.double()
    )
    z_val = ((val.double() - prior.normalizer.mean.double()) / prior.normalizer.std.double())[:64]
    lam, vectors = np.linalg.eigh(np.cov(z_train.numpy().T, bias=True))
    second = ((z_val.numpy() - z_train.numpy().mean(0)) @ vectors) ** 2
    expected = prior.gaussian_reference_loss(torch.tensor(lam), torch.tensor(second.mean(0)))
    assert result.gaussian_reference == pytest.approx(expected, rel=0.03)
    in_sample = math.pi / 2 * np.sqrt(np.clip(np.linalg.eigvalsh(np.cov(z_val.T)), 0, None)).mean()
    assert result.gaussian_reference > in_sample
    assert result.val_over_reference == pytest.approx(result.final_val_loss / expected, rel=0.03)
    val_rows = [row for row in result.history if row.get("val_loss") is not None]
    assert [row["step"] for row in val_rows] == [0, 4, 8, 12]  # 0: the starting weights
    assert result.initial_val_loss == val_rows[0]["val_loss"] > result.final_val_loss
    assert result.final_val_loss == val_rows[-1]["val_loss"]
    train_rows = [row for row in result.history if row.get("train_loss") is not None]
    assert [row["step"] for row in train_rows] == [2, 4, 6, 8, 10, 12]
    training = prior.training_record
    assert training["steps"] == 12 and training["final_val_loss"] == result.final_val_loss
    assert training["gaussian_reference_loss"] == result.gaussian_reference
    assert training["hook"] == "activation" and training["device"].startswith("cpu (")


def test_normalisation_comes_from_buffer_running_stats():
    buffer = filled_buffer(n=300, capacity=100)  # statistics cover all 300 rows, not the last 100
    prior = tiny_prior()
    train_prior(prior, buffer, tiny_config(steps=2, eval_every=0))
    rows = synthetic_activations(300).double()
    torch.testing.assert_close(prior.normalizer.mean, rows.mean(0).float())
    torch.testing.assert_close(
        prior.normalizer.std, (rows.var(0, correction=0) + 1e-5).sqrt().float()
    )


def test_training_lowers_the_loss():
    prior = tiny_prior()
    config = tiny_config(steps=60, eval_every=0, log_every=10, lr=1e-2)
    result = train_prior(prior, filled_buffer(1024), config)
    losses = [row["train_loss"] for row in result.history if row.get("train_loss") is not None]
    assert losses[-1] < 0.8 * losses[0]


def test_loss_curve_csv_and_png_written(tmp_path):
    result = train_prior(tiny_prior(), filled_buffer(), tiny_config(checkpoint_dir=tmp_path))
    rows = read_loss_csv(tmp_path / LOSS_CSV_NAME)
    assert [r["step"] for r in rows] == [r["step"] for r in result.history]
    assert rows[-1]["val_loss"] == pytest.approx(result.final_val_loss)
    assert rows[0]["step"] == 0 and rows[0]["train_loss"] is None  # the starting weights
    assert rows[1]["val_loss"] is None  # step 2: train loss only
    assert (tmp_path / LOSS_PNG_NAME).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_ema_weights_differ_from_raw_and_are_what_is_returned_and_saved(tmp_path):
    prior = tiny_prior()
    train_prior(prior, filled_buffer(), tiny_config(checkpoint_dir=tmp_path / "run"))
    state = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path / "run"))
    names = [name for name, _ in prior.named_parameters()]
    ema = [v for k, v in sorted(state.tensors.items()) if k.startswith("ema/")]
    assert len(ema) == len(names)
    differs = False
    for name, ema_value in zip(names, ema, strict=True):
        current = prior.state_dict()[name]
        assert torch.equal(current, ema_value), name
        differs |= not torch.equal(state.tensors[f"model/{name}"], ema_value)
    assert differs, "the EMA weights should differ from the raw weights after 12 steps"
    prior.save_pretrained(tmp_path / "prior")
    reloaded = load_prior(tmp_path / "prior")
    assert_same_tensors(reloaded.state_dict(), prior.state_dict())
    assert reloaded.training_record["steps"] == 12


def test_without_ema_the_raw_weights_are_returned(tmp_path):
    prior = tiny_prior()
    train_prior(prior, filled_buffer(), tiny_config(ema_decay=0.0, checkpoint_dir=tmp_path))
    state = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path))
    assert not any(k.startswith("ema/") for k in state.tensors)
    for name, value in prior.state_dict().items():
        assert torch.equal(value, state.tensors[f"model/{name}"]), name


def _run(tmp_path, name, *, refill_model=None, crash=None, budget=None):
    """One (possibly interrupted or resumed) tiny run; resumes if `name` already has checkpoints."""
    config = tiny_config(
        checkpoint_dir=tmp_path / name, time_budget_s=budget, refill_every=3 if refill_model else 0
    )
    prior = tiny_prior()
    refill, source = None, None
    if refill_model is None:
        buffer = filled_buffer(n=512, capacity=256)
    else:
        d_model = refill_model.cfg.d_model
        hook = "blocks.0.hook_resid_post"
        prior = tiny_prior(d_model=d_model)
        buffer = ActivationRingBuffer(96, d_model, [hook])
        source = CountingTokenSource(batch_size=2, ctx=8)
        capture = ActivationCapture(refill_model, [hook], buffer, CaptureConfig())
        fill_buffer(
            refill_model, source, [hook], 96, buffer=buffer, capture=capture, progress=False
        )
        refill = make_refill(refill_model, source, [hook], buffer, capture=capture)
    steps_seen = []

    def callback(done):
        steps_seen.append(done)
        if crash is not None:
            crash(done)

    result = train_prior(prior, buffer, config, refill=refill, callback=callback)
    return prior, result, buffer, source, refill, steps_seen


@pytest.mark.parametrize("with_refill", [False, True], ids=["no_refill", "refill"])
def test_resume_after_crash_is_bit_identical(tmp_path, tiny_model, with_refill):
    model = tiny_model if with_refill else None
    prior_a, result_a, buffer_a, source_a, refill_a, _ = _run(tmp_path, "a", refill_model=model)

    with pytest.raises(SimulatedCrash):
        _run(tmp_path, "b", refill_model=model, crash=crash_at(7))
    assert ckpt.latest_checkpoint(tmp_path / "b").name == "step_00000004"
    prior_b, result_b, buffer_b, source_b, refill_b, steps_b = _run(
        tmp_path, "b", refill_model=model
    )

    assert steps_b[0] == 5, "the second session must continue from the step-4 checkpoint"
    assert result_b.steps == result_a.steps == 12
    assert_same_tensors(prior_a.state_dict(), prior_b.state_dict())
    final_a = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path / "a"))
    final_b = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path / "b"))
    assert_same_tensors(final_a.tensors, final_b.tensors)  # raw weights, EMA, AdamW moments
    assert_same_tensors(buffer_a.state_dict(), buffer_b.state_dict())
    assert [r["train_loss"] for r in result_a.history] == [
        r["train_loss"] for r in result_b.history
    ]
    if with_refill:
        assert refill_a.n_refills == refill_b.n_refills == 3  # at steps 3, 6 and 9
        assert source_a.position == source_b.position > 0


def test_time_budget_stops_early_and_resume_finishes_identically(tmp_path):
    prior_a, result_a, *_ = _run(tmp_path, "a")
    _, stopped, *_ = _run(tmp_path, "b", budget=1e-9)
    assert stopped.stopped_reason == "time_budget" and stopped.steps == 1
    assert stopped.history[-1]["val_loss"] is not None
    assert ckpt.latest_checkpoint(tmp_path / "b").name == "step_00000001"
    prior_b, result_b, *_ = _run(tmp_path, "b")
    assert result_b.stopped_reason == "completed" and result_b.steps == 12
    assert_same_tensors(prior_a.state_dict(), prior_b.state_dict())

    prior_c, result_c, *_ = _run(tmp_path, "b")  # nothing left to do
    assert result_c.stopped_reason == "already_complete" and result_c.steps == 12
    assert_same_tensors(prior_a.state_dict(), prior_c.state_dict())
    assert result_c.final_val_loss == pytest.approx(result_b.final_val_loss)


def test_non_finite_loss_stops_with_message_and_keeps_last_good_checkpoint(tmp_path):
    prior = tiny_prior()

    def poison(done):
        if done == 5:
            with torch.no_grad():
                next(prior.parameters()).fill_(float("nan"))

    config = tiny_config(checkpoint_dir=tmp_path)
    with pytest.raises(NonFiniteLossError, match="step 6") as info:
        train_prior(prior, filled_buffer(), config, callback=poison)
    assert info.value.step == 6
    latest = ckpt.latest_checkpoint(tmp_path)
    assert latest.name == "step_00000004" and info.value.checkpoint == latest
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(("step", ".step"))) == [
        "step_00000004"
    ]
    state = ckpt.load_checkpoint(latest)
    assert all(torch.isfinite(v).all() for k, v in state.tensors.items() if k.startswith("model/"))


def test_empty_buffer_is_refused():
    with pytest.raises(ValueError, match="buffer is empty"):
        train_prior(tiny_prior(), ActivationRingBuffer(16, D_MODEL), tiny_config())


def test_mismatched_width_is_refused():
    with pytest.raises(ValueError, match="d_model=8"):
        train_prior(tiny_prior(), filled_buffer(d_model=6), tiny_config())


def test_resume_false_refuses_a_directory_with_checkpoints(tmp_path):
    train_prior(tiny_prior(), filled_buffer(), tiny_config(steps=4, checkpoint_dir=tmp_path))
    with pytest.raises(ValueError, match="resume=True"):
        train_prior(
            tiny_prior(), filled_buffer(), tiny_config(checkpoint_dir=tmp_path), resume=False
        )


def test_resume_from_explicit_path(tmp_path):
    train_prior(tiny_prior(), filled_buffer(), tiny_config(steps=4, checkpoint_dir=tmp_path / "a"))
    config = tiny_config(steps=4, checkpoint_dir=tmp_path / "b")
    result = train_prior(tiny_prior(), filled_buffer(), config, resume=tmp_path / "a")
    assert result.stopped_reason == "already_complete" and result.steps == 4
    with pytest.raises(FileNotFoundError, match="no complete checkpoint|neither"):
        train_prior(tiny_prior(), filled_buffer(), config, resume=tmp_path / "missing")


def test_refill_is_called_every_refill_every_steps():
    buffer = filled_buffer(n=256, capacity=128)
    calls = []

    def refill(n_rows):
        calls.append(n_rows)
        buffer.push(synthetic_activations(n_rows, seed=len(calls) + 10))

    config = tiny_config(refill_every=5, refill_fraction=0.5)
    train_prior(tiny_prior(), buffer, config, refill=refill)
    assert calls == [64, 64]  # before steps 5 and 10
    assert buffer.num_pushed == 256 + 128
    with pytest.raises(ValueError, match="no refill"):
        train_prior(tiny_prior(), buffer, config)


def test_no_files_without_checkpoint_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    train_prior(tiny_prior(), filled_buffer(), tiny_config(steps=4))
    assert os.listdir(tmp_path) == []


def test_bf16_autocast_runs_on_cpu():
    result = train_prior(tiny_prior(), filled_buffer(), tiny_config(steps=4, autocast="bf16"))
    assert math.isfinite(result.final_val_loss)


def test_checkpoint_files_are_only_json_and_safetensors(tmp_path):
    train_prior(tiny_prior(), filled_buffer(), tiny_config(steps=4, checkpoint_dir=tmp_path))
    files = [p for p in Path(tmp_path).rglob("*") if p.is_file()]
    assert files and all(p.suffix in {".json", ".safetensors", ".csv", ".png"} for p in files)


def _tiny_unet():
    from tl_diffusion_prior.priors.unet import UNetPrior, UNetPriorConfig

    torch.manual_seed(0)
    unet = dict(
        block_out_channels=[8, 8],
        layers_per_block=1,
        down_block_types=["DownBlock2D", "DownBlock2D"],
        up_block_types=["UpBlock2D", "UpBlock2D"],
        norm_num_groups=4,
        attention_head_dim=8,
    )
    config = UNetPriorConfig(d_model=16, hook_name="h", model_name="tiny-test", unet=unet)
    return UNetPrior(config)


@pytest.mark.slow  # diffusers' UNet is slow on a shared CPU even at this size
def test_unet_prior_is_fitted_to_data_and_resumes_exactly(tmp_path):
    prior_a = _tiny_unet()
    small = dict(steps=6, batch_size=16, checkpoint_every=2, eval_every=3, val_size=32)
    config_a = tiny_config(checkpoint_dir=tmp_path / "a", **small)
    result = train_prior(prior_a, filled_buffer(d_model=16), config_a)
    assert prior_a.config.layout == "spectral"  # fit_data ran after the normalisation was set
    assert math.isfinite(result.final_val_loss) and result.gaussian_reference > 0
    config_b = tiny_config(checkpoint_dir=tmp_path / "b", **small)
    with pytest.raises(SimulatedCrash):
        train_prior(_tiny_unet(), filled_buffer(d_model=16), config_b, callback=crash_at(3))
    prior_b = _tiny_unet()
    train_prior(prior_b, filled_buffer(d_model=16), config_b)
    assert_same_tensors(prior_a.state_dict(), prior_b.state_dict())


def test_provenance_must_be_json():
    with pytest.raises(ValueError, match="JSON"):
        train_prior(tiny_prior(), filled_buffer(), tiny_config(), provenance={"x": object()})
