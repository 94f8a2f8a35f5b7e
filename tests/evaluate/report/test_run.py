import json

import pytest
import torch

from tests.priors.helpers import build_tiny_prior
from tl_diffusion_prior.capture.capture import fill_buffer
from tl_diffusion_prior.core.serialization import load_safetensors
from tl_diffusion_prior.evaluate.baselines.base import load_baseline
from tl_diffusion_prior.evaluate.fidelity import TokenSet
from tl_diffusion_prior.evaluate.report import run_evaluation, write_report
from tl_diffusion_prior.evaluate.settings import EvalSettings
from tl_diffusion_prior.evaluate.steering_curves import steering_curves
from tl_diffusion_prior.training.loss_log import write_loss_csv

HOOK = "blocks.1.hook_resid_post"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _settings() -> EvalSettings:
    return EvalSettings.quick(
        seq_len=12,
        batch_size=4,
        pca_ks=(4, 16, 999),
        sae_sizes=((2, 4),),
        sae_train={"steps": 5, "batch_size": 64},
        ts=(0.25, 0.5),
        prior_num_steps=2,
        n_fd_samples=100,
        fd_sample_steps=2,
        n_bootstrap=50,
    )


@pytest.fixture
def tiny_run(tiny_model, tmp_path):
    gen = torch.Generator().manual_seed(0)
    buffer = fill_buffer(
        tiny_model, torch.randint(0, 300, (24, 16), generator=gen), HOOK, 300, progress=False
    )
    prior = build_tiny_prior("mlp", d_model=64, hook_name=HOOK)
    prior.set_normalization(buffer.mean(0), buffer.var(0))
    prior_dir = tmp_path / "prior"
    prior.save_pretrained(prior_dir)
    write_loss_csv(
        prior_dir / "loss.csv", [{"step": s, "train_loss": 2.0 - s / 10} for s in range(5)]
    )
    token_sets = [
        TokenSet("heldout", torch.randint(0, 300, (6, 12), generator=gen), torch.arange(6) // 2),
        TokenSet("pydoc", torch.randint(0, 300, (4, 12), generator=gen), torch.arange(4)),
    ]
    curves = steering_curves(
        {"plain": lambda s: [s, s + 1]},
        [1.0, 2.0],
        lambda items: items,
        lambda items: [1.0 for _ in items],
        n_resamples=10,
    )
    report = run_evaluation(
        tiny_model,
        [prior],
        buffer,
        _settings(),
        token_sets=token_sets,
        prior_dirs=[prior_dir],
        steering=curves,
        progress=False,
    )
    return report, tmp_path


def test_run_covers_every_method_condition_and_dataset(tiny_run):
    report, _ = tiny_run
    conditions = {r.condition for r in report.results}
    assert conditions == {"reconstruct", "noise std=1", "steer ood-minus-heldout scale=0.25"}
    methods = {r.method for r in report.results}
    assert methods == {
        "identity",
        "PCA",
        "SAE",
        "Gaussian posterior mean",
        "mlp prior",
        "mlp prior one-step",
    }
    assert {r.dataset for r in report.results} == {"heldout", "pydoc"}
    # k above d_model is dropped; identity reconstruction is exact.
    assert {r.setting["k"] for r in report.results if r.method == "PCA"} == {4, 16}
    identity = [
        r for r in report.results if r.method == "identity" and r.condition == "reconstruct"
    ]
    assert all(r.delta_lm.mean == 0.0 for r in identity)
    assert report.loss_histories["mlp prior"]["train_loss"][-1] == pytest.approx(1.6)
    assert report.frechet["floor"]["n"] == 100
    assert set(report.targets) >= {
        "a_restoration_heldout",
        "b_reconstruction_vs_sae",
        "b_equal_distortion",
        "c_frechet",
    }


def test_write_report_outputs(tiny_run):
    report, tmp_path = tiny_run
    written = write_report(report, tmp_path / "report")
    data = json.loads(written["json"].read_text())
    assert data["settings"]["pca_ks"] == [4, 16, 999]
    assert data["hook_name"] == HOOK
    assert len(data["results"]) == len(report.results)
    assert data["results"][0]["delta_lm"]["n"] >= 1
    assert data["steering"]["points"][0]["method"] == "plain"
    vectors = load_safetensors(written["steer_vectors"])
    assert list(vectors) == ["ood-minus-heldout"] and vectors["ood-minus-heldout"].shape == (64,)
    markdown = written["markdown"].read_text()
    for heading in (
        "## Benchmark targets",
        "## Delta LM on `heldout`",
        "## Frechet distance",
        "## Best setting per method",
        "(c) normalised FD / floor",
    ):
        assert heading in markdown
    pngs = sorted(p.name for p in (tmp_path / "report" / "plots").iterdir())
    assert pngs == sorted(
        [
            "loss_curves.png",
            "delta_lm_heldout.png",
            "delta_lm_pydoc.png",
            "distortion_heldout.png",
            "distortion_pydoc.png",
            "distortion_normalized_heldout.png",
            "distortion_normalized_pydoc.png",
            "steering_pareto.png",
            "pca_scatter.png",
        ]
    )
    for name in pngs:
        assert (tmp_path / "report" / "plots" / name).read_bytes()[:8] == PNG_MAGIC


def test_baselines_can_be_reused(tiny_run, tiny_model):
    from tl_diffusion_prior.evaluate.plan import fit_baselines

    report, tmp_path = tiny_run
    rows = torch.randn(200, 64)
    baselines = fit_baselines(rows, _settings())
    baselines.save(tmp_path / "baselines")
    names = sorted(p.name for p in (tmp_path / "baselines").iterdir())
    assert names == ["gaussian", "sae_d128_k4"]
    assert load_baseline(tmp_path / "baselines" / "gaussian").config.kind == "gaussian"


def test_settings_round_trip_and_validation():
    settings = _settings()
    assert EvalSettings.from_dict(settings.to_dict()) == settings
    with pytest.raises(ValueError, match="Unknown evaluation settings"):
        EvalSettings.from_dict({"bogus": 1})
    with pytest.raises(ValueError, match="noise_stds"):
        EvalSettings(noise_stds=(0.0,))
    with pytest.raises(ValueError, match="ts"):
        EvalSettings(ts=(0.0,))
    with pytest.raises(ValueError, match="steps"):
        EvalSettings(sae_train={"steps": 0})


def test_settings_from_json_data():
    settings = EvalSettings.from_dict(json.loads(json.dumps(_settings().to_dict())))
    assert settings == _settings()
    assert EvalSettings.from_dict({"noise_stds": [1, 2], "headline_t": 1}).noise_stds == (1.0, 2.0)


def test_window_length_follows_the_priors_capture_context():
    prior = build_tiny_prior("mlp", d_model=64, hook_name=HOOK)
    assert EvalSettings().resolved_seq_len([prior]) == 128
    prior.config.training = {"ctx": 96}
    assert EvalSettings().resolved_seq_len([prior]) == 96
    assert EvalSettings(seq_len=32).resolved_seq_len([prior]) == 32
    other = build_tiny_prior("mlp", d_model=64, hook_name=HOOK)
    other.config.training = {"ctx": 64}
    with pytest.raises(ValueError, match="different context lengths"):
        EvalSettings().resolved_seq_len([prior, other])
