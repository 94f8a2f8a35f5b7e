from pathlib import Path

import pytest
import torch

from tl_diffusion_prior.constants import DEFAULT_HOOK, DEFAULT_MODEL_NAME, WEIGHTS_NAME
from tl_diffusion_prior.priors import MLPPrior, default_prior, load_default_prior, resolve_prior_dir
from tl_diffusion_prior.recipes import capture_corpus
from tl_diffusion_prior.training import TrainConfig
from tl_diffusion_prior.training.gaussian_reference import gaussian_reference
from tl_diffusion_prior.training.validation import validation_loss


def test_default_names_the_shipped_prior_and_anything_else_is_a_path():
    assert resolve_prior_dir("default") == default_prior.DEFAULT_PRIOR_DIR
    assert resolve_prior_dir("./default") == Path("./default")
    assert resolve_prior_dir("runs/mlp") == Path("runs/mlp")


def test_a_missing_shipped_prior_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(default_prior, "DEFAULT_PRIOR_DIR", tmp_path / "default_prior")
    with pytest.raises(FileNotFoundError, match="built without its package data"):
        resolve_prior_dir("default")


def test_shipped_prior_loads_offline_and_records_how_it_was_made():
    prior = load_default_prior()
    assert isinstance(prior, MLPPrior) and prior.config.gaussian_skip
    assert (prior.config.hook_name, prior.config.model_name) == (DEFAULT_HOOK, DEFAULT_MODEL_NAME)
    assert prior.network.in_proj.weight.dtype == torch.float32
    assert (default_prior.DEFAULT_PRIOR_DIR / WEIGHTS_NAME).stat().st_size <= 32 * 2**20
    record = prior.training_record
    assert record["command"].startswith("tl-diffusion-prior train ")
    assert len(record["code_version"]["commit"]) == 40
    assert record["samples_seen"] >= 10_000_000
    assert record["elapsed_s"] > 0 and record["device"].startswith("cpu")
    shipped = record["shipped"]
    assert shipped["stored_dtype"] == "bfloat16"
    # Rounding the weights to bf16 must not change the held-out loss by more than 0.5 %.
    assert shipped["heldout_loss_bfloat16_weights"] == pytest.approx(
        shipped["heldout_loss_float32_weights"], rel=0.005
    )


@pytest.mark.slow
def test_shipped_prior_beats_its_gaussian_reference_on_heldout_text(default_model):
    prior = load_default_prior()
    buffer, _, _ = capture_corpus(default_model, "heldout", 8192, 128, prior.config.hook_name)
    rows = buffer.filled_rows(0).float()
    scoring = TrainConfig(autocast="off", batch_size=1024, seed=0, progress=False)
    loss = validation_loss(prior, rows, scoring, torch.device("cpu"))
    # In-sample on these rows, so biased low: a stricter bar than the trainer's reference.
    reference = gaussian_reference(prior, rows).loss
    assert loss < 0.95 * reference
