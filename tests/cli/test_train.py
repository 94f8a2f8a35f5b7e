import argparse
import json

import pytest

from tl_diffusion_prior.cli.train import (
    add_train_arguments,
    build_prior_config,
    build_train_config,
    run_train,
)
from tl_diffusion_prior.constants import (
    CONFIG_NAME,
    LOSS_CSV_NAME,
    LOSS_PNG_NAME,
    TRAINING_RECORD_NAME,
)
from tl_diffusion_prior.priors import PRIOR_REGISTRY, load_prior
from tl_diffusion_prior.recipes import PRIOR_PRESETS, TRAIN_PRESETS


def parse(*argv):
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    return parser.parse_args(list(argv))


def test_preset_fills_unset_options_and_flags_override():
    args = parse("--out", "x", "--preset", "quick", "--steps", "7", "--time-budget", "30")
    config = build_train_config(args, "x.checkpoints")
    assert config.steps == 7  # explicit flag wins
    assert config.batch_size == TRAIN_PRESETS["quick"]["batch_size"]
    assert config.val_size == TRAIN_PRESETS["quick"]["val_activations"]
    assert config.time_budget_s == 30 and config.checkpoint_dir == "x.checkpoints"
    paper = build_train_config(parse("--out", "x", "--preset", "paper"), "c")
    assert paper.lr == 5e-5 and paper.batch_size == 4096


def test_cpu_preset_is_sized_per_design():
    unet = build_train_config(parse("--out", "x", "--prior", "unet"), "c")
    assert unet.batch_size == PRIOR_PRESETS["unet"]["cpu"]["batch_size"] == 256
    assert unet.steps == 600 and unet.lr == 1e-3
    assert unet.val_size == TRAIN_PRESETS["cpu"]["val_activations"]  # shared fields still apply
    mlp = build_train_config(parse("--out", "x", "--prior", "mlp"), "c")
    assert mlp.batch_size == TRAIN_PRESETS["cpu"]["batch_size"] and mlp.steps == 1200
    flagged = build_train_config(parse("--out", "x", "--prior", "unet", "--batch-size", "64"), "c")
    assert flagged.batch_size == 64


def test_prior_options_and_presets():
    args = parse("--out", "x", "--prior-option", "depth=2", "--prior-option", "d_hidden=32")
    config = build_prior_config(PRIOR_REGISTRY["mlp"], args, d_model=16)
    assert (config.depth, config.d_hidden, config.d_model) == (2, 32, 16)
    with pytest.raises(ValueError, match="KEY=VALUE"):
        build_prior_config(PRIOR_REGISTRY["mlp"], parse("--out", "x", "--prior-option", "x"), 16)
    with pytest.raises(ValueError, match="no presets"):
        build_prior_config(PRIOR_REGISTRY["mlp"], parse("--out", "x", "--prior-preset", "a"), 16)


def test_existing_checkpoints_need_resume(tmp_path):
    from tests.training.helpers import filled_buffer, tiny_config, tiny_prior
    from tl_diffusion_prior.training.trainer import train_prior

    run_dir = tmp_path / "prior.checkpoints"
    train_prior(tiny_prior(), filled_buffer(), tiny_config(steps=2, checkpoint_dir=run_dir))
    with pytest.raises(ValueError, match="--resume"):
        run_train(parse("--out", str(tmp_path / "prior")))


@pytest.mark.slow
def test_train_command_end_to_end(tmp_path):
    out = tmp_path / "prior"
    argv = [
        "--out", str(out), "--preset", "quick", "--n-activations", "600",
        "--val-activations", "256", "--steps", "6", "--batch-size", "64", "--eval-every", "3",
        "--checkpoint-every", "3", "--refill-every", "2", "--capture-batch-size", "2",
        "--ctx", "64", "--prior-option", "depth=1", "--prior-option", "d_hidden=64",
        "--prior-option", "d_mlp=64", "--no-progress",
    ]  # fmt: skip
    assert run_train(parse(*argv)) == 0
    assert {CONFIG_NAME, LOSS_CSV_NAME, LOSS_PNG_NAME} <= {p.name for p in out.iterdir()}
    prior = load_prior(out)
    training = json.loads((out / TRAINING_RECORD_NAME).read_text())
    assert training["steps"] == 6 and training["hook"] == prior.config.hook_name
    assert training["corpus_split"] == "train" and training["final_val_loss"] > 0
    # Resuming a finished run does no more steps and reports the same result.
    assert run_train(parse(*argv, "--resume")) == 0
    assert json.loads((out / TRAINING_RECORD_NAME).read_text())["stopped_reason"] == (
        "already_complete"
    )
