import pytest
import torch
import torch.nn.functional as F

from tests.priors.helpers import build_tiny_prior, randomize_
from tl_diffusion_prior.evaluate.baselines import TopKSAE, TopKSAEConfig
from tl_diffusion_prior.evaluate.probe_tasks import document_split
from tl_diffusion_prior.evaluate.probing import (
    ProbeConfig,
    best_single_unit,
    meta_neuron_features,
    sae_latent_features,
    standardized_mean_difference,
)

CONFIG = ProbeConfig(prefilter=4, n_folds=3, min_class_rows=5, n_resamples=100)


def _task(n_docs=24, per_doc=20, seed=0):
    gen = torch.Generator().manual_seed(seed)
    doc_ids = torch.arange(n_docs).repeat_interleave(per_doc)
    labels = (torch.rand(doc_ids.numel(), generator=gen) < 0.4).long()
    noise = torch.randn(doc_ids.numel(), 6, generator=gen)
    return gen, doc_ids, labels, noise


def test_a_perfectly_separating_unit_is_found_with_auc_one():
    _, doc_ids, labels, features = _task()
    features[:, 3] = labels * 2.0 - 1 + 0.1 * features[:, 3]  # separates, with a margin
    result = best_single_unit(features, labels, doc_ids, document_split(24, 0.3), CONFIG)
    assert (result.unit, result.sign) == (3, 1)
    assert result.cv_auc == 1.0 and result.test_auc.mean == 1.0


def test_a_unit_lower_on_positives_gets_a_negative_sign():
    _, doc_ids, labels, features = _task(seed=1)
    features[:, 0] = -3.0 * labels + 0.5 * features[:, 0]
    result = best_single_unit(features, labels, doc_ids, document_split(24, 0.3), CONFIG)
    assert (result.unit, result.sign) == (0, -1)
    assert result.test_auc.mean > 0.99


def test_uninformative_units_score_near_chance_and_unlabelled_rows_are_ignored():
    _, doc_ids, labels, features = _task(n_docs=60, per_doc=30, seed=2)
    labels[::3] = -1
    features[labels == -1, 2] = 100.0  # would matter only if the unlabelled rows were used
    result = best_single_unit(features, labels, doc_ids, document_split(60, 0.3), CONFIG)
    assert 0.4 < result.test_auc.mean < 0.6
    assert result.n_train + result.n_test == int((labels >= 0).sum())


def test_too_few_rows_of_a_class_are_refused():
    _, doc_ids, labels, features = _task()
    labels[:] = 0
    labels[:3] = 1
    with pytest.raises(ValueError, match="min_class_rows"):
        best_single_unit(features, labels, doc_ids, document_split(24, 0.3), CONFIG)


def test_the_probe_sign_is_that_of_a_fitted_one_unit_logistic_regression():
    gen = torch.Generator().manual_seed(3)
    for trial in range(5):
        x = torch.randn(400, generator=gen, dtype=torch.float64) * (trial + 1) + trial
        y = torch.rand(400, generator=gen, dtype=torch.float64) < torch.sigmoid(0.3 * x - 1)
        w = torch.zeros(2, dtype=torch.float64)  # slope, intercept; Newton's method
        design = torch.stack([x, torch.ones_like(x)], dim=1)
        for _ in range(30):
            p = torch.sigmoid(design @ w)
            hessian = design.T @ (design * (p * (1 - p))[:, None])
            w += torch.linalg.solve(hessian, design.T @ (y.double() - p))
        smd = standardized_mean_difference(x[:, None], y)
        assert torch.sign(smd[0]) == torch.sign(w[0])


def test_meta_neurons_are_the_down_projection_inputs():
    prior = randomize_(build_tiny_prior("mlp"))
    x = torch.randn(7, prior.config.d_model)
    features = meta_neuron_features(prior, x, t=0.1, seed=0, chunk_size=3)
    depth, d_mlp = prior.config.depth, prior.config.d_mlp
    assert features.shape == (7, depth * d_mlp)
    # Recompute block by block from the same noised input.
    one = meta_neuron_features(prior, x[:1], t=0.1, seed=0)
    assert torch.allclose(one, features[:1], atol=1e-6)  # a row does not depend on its batch
    net = prior.network
    z = prior.normalizer.normalize(x)
    from tl_diffusion_prior.priors.score import ScoreConfig, ScoreNoise

    eps = ScoreNoise(ScoreConfig("one_step", (0.1,), 0), prior.config.d_model).for_vectors(x)[:, 0]
    h = net.in_proj(torch.lerp(z, eps, 0.1))
    mods = net.time_modulation(torch.tensor([0.1]))
    expected = []
    for block, mod in zip(net.blocks, mods, strict=True):
        gate, up = block.gate_up(block.norm(h)).chunk(2, dim=-1)
        inner = F.silu(gate * mod) * up
        expected.append(inner)
        h = h + block.down(inner)
    assert torch.allclose(features, torch.cat(expected, dim=-1), atol=1e-5)
    assert not torch.allclose(features, meta_neuron_features(prior, x, t=0.5), atol=1e-3)


def test_meta_neurons_refuse_a_prior_without_down_projections():
    prior = build_tiny_prior("unet")
    with pytest.raises(ValueError, match="down-projections"):
        meta_neuron_features(prior, torch.randn(2, prior.config.d_model))


def test_sae_latents_are_the_dense_topk_code():
    sae = TopKSAE(TopKSAEConfig(d_model=8, d_sae=32, k=3))
    sae.initialize(torch.zeros(8), torch.Generator().manual_seed(0))
    sae.normalizer.set_stats(
        torch.zeros(8, dtype=torch.float64), torch.ones(8, dtype=torch.float64)
    )
    x = torch.randn(5, 8)
    dense = sae_latent_features(sae, x, chunk_size=2)
    assert dense.shape == (5, 32)
    assert ((dense != 0).sum(dim=1) <= 3).all()
    code = sae.encode(sae.normalizer.normalize(x))
    assert torch.allclose(dense.gather(1, code.indices), code.values, atol=1e-6)


def test_standardized_mean_difference_by_hand():
    features = torch.tensor([[0.0, 3.0], [2.0, 3.0], [4.0, 3.0], [6.0, 3.0]])
    labels = torch.tensor([False, False, True, True])
    # Means 1 and 5, population variances 1 and 1: (5 - 1) / 1; a constant column gives 0.
    assert standardized_mean_difference(features, labels).tolist() == [4.0, 0.0]
