import pytest
import torch

from tests.evaluate.helpers import correlated_gaussian
from tl_diffusion_prior.evaluate.baselines.base import fit_normalizer
from tl_diffusion_prior.evaluate.baselines.sae import TopKSAE, TopKSAEConfig
from tl_diffusion_prior.evaluate.baselines.sae_training import (
    SAETrainConfig,
    fraction_of_variance_unexplained,
    lr_factor,
    train_topk_sae,
)

D = 16


@pytest.fixture(scope="module")
def data():
    # Low-rank data with a large mean: a good SAE must beat predicting the mean by far.
    x = correlated_gaussian(4000, D, seed=0, rank=4)
    return x[:3000], x[3000:]


@pytest.fixture(scope="module")
def sae(data):
    train, _ = data
    config = SAETrainConfig(steps=150, batch_size=256, lr=3e-3, dead_after_rows=5000)
    return train_topk_sae(train, fit_normalizer(train), d_sae=64, k=4, config=config)


def test_sae_beats_the_mean_predictor(data, sae):
    train, heldout = data
    recon = sae.reconstruct(heldout)
    sae_error = (recon - heldout).square().sum()
    mean_error = (train.mean(0) - heldout).square().sum()
    assert sae_error < 0.3 * mean_error
    fvu = fraction_of_variance_unexplained(sae, heldout)
    assert 0.0 < fvu < 0.3
    assert sae.training_record["train_fvu"] < 0.3
    history = sae.training_record["history"]
    assert history["loss"][-1] < history["loss"][0]


def test_code_is_k_sparse_and_decoder_rows_are_unit_norm(data, sae):
    z = sae.normalizer.normalize(data[1][:32])
    code = sae.encode(z)
    assert code.values.shape == (32, 4) and (code.values >= 0).all()
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(64), rtol=0, atol=1e-5)
    dense = torch.zeros(32, 64).scatter(1, code.indices, code.values)
    torch.testing.assert_close(sae(z), dense @ sae.W_dec + sae.b_dec, rtol=1e-5, atol=1e-5)


def test_training_is_reproducible(data):
    train = data[0][:1000]
    config = SAETrainConfig(steps=5, batch_size=64)
    normalizer = fit_normalizer(train)
    a = train_topk_sae(train, normalizer, 32, 4, config)
    b = train_topk_sae(train, normalizer, 32, 4, config)
    torch.testing.assert_close(a.W_dec, b.W_dec)


def test_save_load_round_trip(tmp_path, data, sae):
    sae.save_pretrained(tmp_path / "sae")
    loaded = TopKSAE.from_pretrained(tmp_path / "sae")
    assert loaded.config == sae.config
    torch.testing.assert_close(loaded.reconstruct(data[1]), sae.reconstruct(data[1]))
    assert loaded.training_record == sae.training_record
    assert sorted(p.name for p in (tmp_path / "sae").iterdir()) == [
        "checksums.json",
        "config.json",
        "model.safetensors",
        "training.json",
    ]


def test_lr_schedule():
    config = SAETrainConfig(steps=100, warmup_fraction=0.1, decay_fraction=0.2)
    assert lr_factor(0, config) == pytest.approx(0.1)
    assert lr_factor(9, config) == pytest.approx(1.0)
    assert lr_factor(50, config) == 1.0
    assert lr_factor(80, config) == pytest.approx(1.0)
    assert lr_factor(99, config) == pytest.approx(0.05)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(steps=0), "steps"),
        (dict(backend="jax"), "backend"),
        (dict(warmup_fraction=0.6, decay_fraction=0.6), "warmup_fraction"),
        (dict(lr=-1.0), "lr"),
    ],
)
def test_train_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SAETrainConfig(**kwargs)


def test_sae_config_validation():
    with pytest.raises(ValueError, match="must not exceed"):
        TopKSAEConfig(d_model=4, d_sae=8, k=9)
    with pytest.raises(ValueError, match="d_sae"):
        TopKSAEConfig(d_model=4, d_sae=0, k=1)
