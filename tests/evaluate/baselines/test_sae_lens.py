"""SAELens SAEs as baselines: trained with SAELens's own trainer, saved, loaded, checked."""

import json
import pickle

import pytest
import sae_lens
import torch

from tests.evaluate.helpers import correlated_gaussian
from tests.training.helpers import filled_buffer
from tl_diffusion_prior.constants import SAE_LENS_CFG_NAME, SAE_LENS_WEIGHTS_NAME
from tl_diffusion_prior.core.integrity import CorruptFileError
from tl_diffusion_prior.evaluate.baselines import converged, load_baseline
from tl_diffusion_prior.evaluate.baselines.base import fit_normalizer
from tl_diffusion_prior.evaluate.baselines.sae import TopKSAE
from tl_diffusion_prior.evaluate.baselines.sae_lens_baseline import (
    SAELensBaseline,
    check_sae_fits,
    load_sae_lens_sae,
)
from tl_diffusion_prior.evaluate.baselines.sae_lens_training import (
    SAELensTrainConfig,
    train_sae_lens_sae,
)
from tl_diffusion_prior.evaluate.plan import build_plan, fit_baselines
from tl_diffusion_prior.evaluate.reconstructors import SAEReconstructor, label
from tl_diffusion_prior.evaluate.settings import EvalSettings

HOOK = "blocks.0.hook_resid_post"
RECORD_FIELDS = {
    "samples_seen",
    "steps",
    "heldout_nmse",
    "explained_variance",
    "heldout_l0",
    "dead_latents",
    "dead_fraction",
    "converged",
    "criterion",
    "seconds",
}


def _config(**overrides) -> SAELensTrainConfig:
    convergence = dict(eval_every_samples=512, heldout_rows=128, max_samples=6144)
    values = dict(expansion=2, k=4, batch_size=64, lr=3e-3, convergence=convergence)
    return SAELensTrainConfig(**{**values, **overrides})


@pytest.fixture(scope="module")
def trained():
    buffer = filled_buffer(1024, d_model=8)
    return train_sae_lens_sae(buffer, fit_normalizer(buffer), _config(), hook_name=HOOK), buffer


def test_sae_lens_trainer_trains_from_our_buffer_with_a_convergence_record(trained):
    baseline, buffer = trained
    record = baseline.training_record["convergence"]
    assert RECORD_FIELDS <= set(record)
    assert 0 < record["samples_seen"] <= 6144 + 64 and record["heldout_l0"] <= 4
    assert record["explained_variance"] == pytest.approx(1 - record["heldout_nmse"])
    assert baseline.training_record["trainer"].startswith(f"sae_lens {sae_lens.__version__}")
    assert baseline.training_record["n_rows"] == 1024 - 128
    assert isinstance(baseline.sae, sae_lens.TopKSAE)  # the inference SAE, not the training one
    assert baseline.config.space == "normalized" and baseline.config.k == 4
    x = buffer.filled_rows(0)
    nmse = (baseline.reconstruct(x) - x).square().sum() / (x - x.mean(0)).square().sum()
    assert nmse < 0.9  # better than predicting the mean


def test_save_load_round_trip_is_bit_identical_and_unpickles_nothing(
    trained, tmp_path, monkeypatch
):
    baseline, buffer = trained
    baseline.save_pretrained(tmp_path / "sae")
    # SAELens reads its own files directly too.
    assert sae_lens.SAE.load_from_disk(str(tmp_path / "sae")).cfg.d_sae == 16

    def no_pickle(*args, **kwargs):
        raise AssertionError("unpickled")

    monkeypatch.setattr(torch, "load", no_pickle)
    monkeypatch.setattr(pickle, "load", no_pickle)
    monkeypatch.setattr(pickle, "loads", no_pickle)
    loaded = load_baseline(tmp_path / "sae")
    assert isinstance(loaded, SAELensBaseline)
    assert loaded.training_record == baseline.training_record
    x = buffer.filled_rows(0)
    assert torch.equal(loaded.reconstruct(x), baseline.reconstruct(x))


def test_a_flipped_byte_in_sae_lens_weights_is_refused(trained, tmp_path):
    baseline, _ = trained
    baseline.save_pretrained(tmp_path / "sae")
    weights = tmp_path / "sae" / SAE_LENS_WEIGHTS_NAME
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CorruptFileError, match=SAE_LENS_WEIGHTS_NAME):
        load_baseline(tmp_path / "sae")


def test_wrong_width_or_hook_is_refused_before_work(tmp_path):
    sae = sae_lens.TopKSAE(sae_lens.TopKSAEConfig(d_in=8, d_sae=16, k=2))
    sae.cfg.metadata.hook_name = "blocks.3.hook_resid_post"
    with pytest.raises(ValueError, match="d_in=8.*d_model=12"):
        check_sae_fits(sae, "blocks.3.hook_resid_post", 12, "here")
    with pytest.raises(ValueError, match="trained on 'blocks.3.hook_resid_post'"):
        SAELensBaseline.from_sae(sae, space="raw", hook_name=HOOK)
    with pytest.raises(ValueError, match="needs its normalizer"):
        SAELensBaseline.from_sae(sae, space="normalized")
    with pytest.raises(FileNotFoundError, match="neither a folder nor RELEASE:SAE_ID"):
        load_sae_lens_sae(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=SAE_LENS_CFG_NAME):
        load_sae_lens_sae(str(tmp_path / "empty"))


def test_an_external_raw_space_sae_reconstructs_raw_activations(tmp_path):
    torch.manual_seed(0)
    sae = sae_lens.StandardSAE(sae_lens.StandardSAEConfig(d_in=8, d_sae=16))
    sae.save_model(tmp_path / "ext")
    loaded, source = load_sae_lens_sae(str(tmp_path / "ext"))
    baseline = SAELensBaseline.from_sae(loaded, space="raw", hook_name=HOOK, source=source)
    x = torch.randn(5, 3, 8)
    with torch.no_grad():
        expected = sae.decode(sae.encode(x.reshape(-1, 8))).reshape(x.shape)
    assert torch.allclose(baseline.reconstruct(x), expected)
    reconstructor = SAEReconstructor(baseline)
    assert label(reconstructor) == "SAELens SAE (arch=standard, d_sae=16)"


def test_without_sae_lens_our_topk_sae_meets_the_same_criterion(monkeypatch):
    def missing():
        raise ImportError("no sae-lens here")

    monkeypatch.setattr(converged, "import_sae_lens", missing)
    x = correlated_gaussian(1024, 8, seed=1, rank=3)
    configs = [_config(), _config(architecture="standard")]
    saes = converged.fit_converged_saes(x, fit_normalizer(x), configs, hook_name=HOOK)
    assert len(saes) == 1 and isinstance(saes[0], TopKSAE)  # no ReLU SAE of our own
    assert RECORD_FIELDS <= set(saes[0].training_record["convergence"])
    assert saes[0].training_record["instead_of_sae_lens"] == "no sae-lens here"


def test_train_config_checks_and_settings_merge_convergence():
    with pytest.raises(ValueError, match="architecture"):
        SAELensTrainConfig(architecture="jumprelu")
    with pytest.raises(ValueError, match="patience"):
        SAELensTrainConfig(convergence={"patience": 0})
    assert SAELensTrainConfig(k=32).label() == "sae_lens_topk_k32_x8"
    settings = EvalSettings(
        seed=5,
        sae_lens=({"k": 16, "convergence": {"patience": 5}},),
        sae_convergence={"patience": 2, "max_samples": 1000},
    )
    (config,) = settings.sae_lens_configs()
    assert config.seed == 5 and config.k == 16
    assert config.convergence_config().patience == 5  # the entry's own value wins
    assert config.convergence_config().max_samples == 1000
    assert EvalSettings.quick().sae_lens == ()


def test_fit_baselines_trains_the_settings_sae_lens_saes_and_the_plan_uses_them():
    buffer = filled_buffer(1024, d_model=8)
    entry = {"expansion": 2, "k": 2, "batch_size": 64}
    convergence = {"eval_every_samples": 256, "heldout_rows": 64, "max_samples": 512}
    settings = EvalSettings.quick(
        sae_sizes=(), sae_lens=(entry,), sae_convergence=convergence, pca_ks=(4,)
    )
    buffer.provenance["model_fingerprint"] = "0123456789abcdef"
    baselines = fit_baselines(buffer, settings, hook_name=buffer.hook_names[0])
    (sae,) = baselines.saes
    assert isinstance(sae, SAELensBaseline) and sae.config.k == 2
    assert sae.training_record["convergence"]["samples_seen"] >= 512
    assert sae.training_record["model_fingerprint"] == "0123456789abcdef"  # provenance kept
    plan = build_plan(settings, baselines, [], [], None, 1.0)
    reconstruct = next(methods for condition, methods in plan if condition.kind == "reconstruct")
    assert "SAELens SAE (arch=topk, d_sae=16, k=2)" in {label(m) for m in reconstruct}


def test_a_save_without_k_in_its_config_reads_k_from_the_sae_lens_cfg(trained, tmp_path):
    # Saves made before config.json recorded k: the report label must still tell SAEs apart.
    baseline, _ = trained
    baseline.save_pretrained(tmp_path / "sae")
    config_path = tmp_path / "sae" / "config.json"
    config = json.loads(config_path.read_text())
    config.pop("k")
    config_path.write_text(json.dumps(config))
    loaded = load_baseline(tmp_path / "sae", verify=False)
    assert loaded.config.k == 4
    assert SAEReconstructor(loaded).setting["k"] == 4
