import argparse

import pytest
import sae_lens

from tests.evaluate.helpers import fitted_gaussian
from tests.training.helpers import D_MODEL, filled_buffer, tiny_prior
from tl_diffusion_prior.cli.eval import _load_baselines, _settings, add_eval_arguments
from tl_diffusion_prior.cli.main import build_parser
from tl_diffusion_prior.evaluate.baselines.base import fit_normalizer
from tl_diffusion_prior.evaluate.baselines.sae_lens_baseline import SAELensBaseline
from tl_diffusion_prior.evaluate.baselines.sae_lens_training import (
    SAELensTrainConfig,
    train_sae_lens_sae,
)
from tl_diffusion_prior.evaluate.plan import Baselines
from tl_diffusion_prior.evaluate.settings import EvalSettings


def _parse(argv):
    return add_eval_arguments(argparse.ArgumentParser()).parse_args(argv)


def test_arguments_and_settings():
    args = _parse(
        [
            "--prior",
            "a",
            "--prior",
            "b",
            "--out",
            "r",
            "--quick",
            "--seed",
            "3",
            "--settings",
            '{"pca_ks": [8]}',
        ]
    )
    assert args.prior == ["a", "b"] and args.out == "r"
    settings = _settings(args)
    assert settings.seed == 3 and settings.pca_ks == (8,)
    assert settings.max_sequences == 16  # the quick preset
    full = _settings(_parse(["--prior", "a", "--out", "r", "--train-rows", "1000"]))
    assert full.max_train_rows == 1000 and full.max_sequences == EvalSettings().max_sequences


def test_prior_and_out_are_required_and_settings_must_be_an_object():
    with pytest.raises(SystemExit):
        _parse(["--out", "r"])
    with pytest.raises(ValueError, match="JSON object"):
        _settings(_parse(["--prior", "a", "--out", "r", "--settings", "[1]"]))


class _ModelLoaded(Exception):
    """The command got past every check of its inputs to loading the model."""


@pytest.fixture
def eval_until_model_load(monkeypatch, tmp_path):
    def loaded(*args, **kwargs):
        raise _ModelLoaded

    monkeypatch.setattr("tl_diffusion_prior.data.models.load_model", loaded)
    tiny_prior().save_pretrained(tmp_path / "prior")

    def run(*extra):
        argv = ["eval", "--prior", str(tmp_path / "prior"), "--out", str(tmp_path / "r"), *extra]
        args = build_parser().parse_args(argv)
        return args.func(args)

    return run


def test_eval_accepts_saved_sae_lens_saes(eval_until_model_load, tmp_path):
    hook = tiny_prior().config.hook_name
    buffer = filled_buffer(512, d_model=D_MODEL)
    convergence = {"eval_every_samples": 256, "heldout_rows": 64, "max_samples": 512}
    config = SAELensTrainConfig(expansion=2, k=2, batch_size=64, convergence=convergence)
    ours = train_sae_lens_sae(buffer, fit_normalizer(buffer), config, hook_name=hook)
    ours.save_pretrained(tmp_path / "ours")
    external = sae_lens.TopKSAE(sae_lens.TopKSAEConfig(d_in=D_MODEL, d_sae=16, k=2))
    external.save_model(tmp_path / "external")
    with pytest.raises(_ModelLoaded):
        eval_until_model_load("--sae", str(tmp_path / "ours"), "--sae", str(tmp_path / "external"))


def test_eval_refuses_an_sae_of_another_width_or_hook_before_the_model_loads(
    eval_until_model_load, tmp_path
):
    wide = sae_lens.TopKSAE(sae_lens.TopKSAEConfig(d_in=D_MODEL + 1, d_sae=16, k=2))
    wide.save_model(tmp_path / "wide")
    with pytest.raises(ValueError, match=f"d_in={D_MODEL + 1}.*pass an SAE trained on this hook"):
        eval_until_model_load("--sae", str(tmp_path / "wide"))
    other = sae_lens.TopKSAE(sae_lens.TopKSAEConfig(d_in=D_MODEL, d_sae=16, k=2))
    other.cfg.metadata.hook_name = "blocks.9.hook_resid_post"
    other.save_model(tmp_path / "other")
    with pytest.raises(ValueError, match="trained on 'blocks.9.hook_resid_post'"):
        eval_until_model_load("--sae", str(tmp_path / "other"))


def test_baselines_folder_with_sae_lens_saes_loads_back(tmp_path):
    buffer = filled_buffer(512, d_model=D_MODEL)
    convergence = {"eval_every_samples": 256, "heldout_rows": 64, "max_samples": 256}
    config = SAELensTrainConfig(expansion=2, k=2, batch_size=64, convergence=convergence)
    sae = train_sae_lens_sae(buffer, fit_normalizer(buffer), config)
    # Two SAEs of one shape get two folders.
    Baselines(fitted_gaussian(buffer.filled_rows(0)), [sae, sae]).save(tmp_path / "b")
    loaded = _load_baselines(tmp_path / "b")
    assert [type(s) for s in loaded.saes] == [SAELensBaseline, SAELensBaseline]
    assert loaded.saes[0].training_record["convergence"] == sae.training_record["convergence"]
