import math

import numpy as np
import pytest
import torch

from tl_diffusion_prior.priors import MLPPrior, MLPPriorConfig

from .helpers import build_tiny_prior, randomize_, single_thread, train_on_manifold

HOOK = dict(hook_name="blocks.0.hook_resid_post", model_name="tiny-test")


# ---------------------------------------------------------------------------- config / network
def test_config_defaults_resolve_from_d_model():
    cfg = MLPPriorConfig(d_model=576, **HOOK)
    assert (cfg.depth, cfg.d_hidden, cfg.d_mlp, cfg.d_time) == (3, 1152, 1152, cfg.time_embed_dim)
    assert cfg.architecture == "mlp"
    # The measured CPU-scale configuration: 14.3M parameters at d_model 576.
    assert MLPPrior(cfg).num_parameters == pytest.approx(14.3e6, rel=0.01)
    assert cfg.gaussian_skip
    paper = MLPPriorConfig.paper(64, depth=6, **HOOK)
    assert (paper.d_hidden, paper.d_mlp, paper.depth) == (128, 256, 6)
    assert len(MLPPrior(paper).network.blocks) == 6
    assert MLPPriorConfig.from_dict(paper.to_dict()) == paper


@pytest.mark.parametrize(
    "overrides, match",
    [
        (dict(depth=0), "depth"),
        (dict(d_hidden=-1), "d_hidden"),
        (dict(time_embed_dim=15), "even"),
        (dict(sample_steps=0), "sample_steps"),
        (dict(architecture="unet"), "architecture"),
    ],
)
def test_config_validation(overrides, match):
    with pytest.raises(ValueError, match=match):
        MLPPriorConfig(d_model=8, **HOOK, **overrides)


def test_fresh_prior_without_skip_predicts_zero_velocity():
    prior = build_tiny_prior("mlp", gaussian_skip=False)
    z = torch.randn(5, prior.config.d_model)
    v = prior.network.velocity(z, torch.rand(5))
    torch.testing.assert_close(v, torch.zeros_like(v), rtol=0, atol=0)
    # So its loss is E|eps - x|^2 = 1 + E x^2 on normalised data.
    x = torch.randn(4096, prior.config.d_model) * 0.5
    loss = prior.loss(x, generator=torch.Generator().manual_seed(0))
    assert loss.item() == pytest.approx(1.25, rel=0.03)


def test_euler_loop_matches_a_naive_integration():
    prior = randomize_(build_tiny_prior("mlp"))
    d = prior.config.d_model
    x = prior.normalizer.denormalize(torch.randn(6, d))
    noise = torch.randn(6, d)
    t_start, steps = 0.7, 5
    out = prior.denoise(x, t_start=t_start, num_steps=steps, noise=noise)
    with torch.no_grad():
        z = (1 - t_start) * prior.normalizer.normalize(x) + t_start * noise
        ts = torch.linspace(t_start, 0.0, steps + 1).tolist()
        for t_now, t_next in zip(ts[:-1], ts[1:], strict=True):
            z = z + (t_next - t_now) * prior.network.velocity(z, torch.full((1,), t_now))
        expected = prior.normalizer.denormalize(z)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ Gaussian reference loss
def flow_gaussian_mmse(lam, t):
    return lam / ((1 - t) ** 2 * lam + t**2)


def test_gaussian_reference_matches_quadrature():
    prior = build_tiny_prior("mlp", d_model=6)
    lam = np.array([1e-3, 0.05, 0.3, 1.0, 2.5, 40.0])
    nodes, weights = np.polynomial.legendre.leggauss(400)
    t = (nodes + 1) / 2
    per_dim = [(weights / 2 * flow_gaussian_mmse(value, t)).sum() for value in lam]
    expected = float(np.mean(per_dim))
    assert prior.gaussian_reference_loss(torch.tensor(lam)) == pytest.approx(expected, rel=1e-9)
    assert prior.gaussian_reference_loss(torch.ones(6)) == pytest.approx(math.pi / 2, rel=1e-12)


def test_gaussian_reference_matches_monte_carlo_of_the_loss():
    """prior.loss with the analytically optimal linear denoiser reproduces the closed form."""
    torch.manual_seed(0)
    lam = torch.tensor([0.02, 0.1, 0.5, 1.0, 2.0, 5.0], dtype=torch.float64)
    d = len(lam)
    rotation, _ = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64))
    prior = build_tiny_prior("mlp", d_model=d)  # unfitted normaliser: data is already normalised

    def linear_velocity(scale):
        def velocity(z, t):
            t = t.double()[:, None]
            coef = (t - (1 - t) * lam) / ((1 - t) ** 2 * lam + t**2)
            return (((z.double() @ rotation) * coef * scale) @ rotation.T).float()

        return velocity

    gen = torch.Generator().manual_seed(1)
    chunks = [
        (torch.randn(8192, d, generator=gen, dtype=torch.float64) * lam.sqrt()) @ rotation.T
        for _ in range(40)
    ]

    def monte_carlo(scale):
        prior.network.velocity = linear_velocity(scale)
        gen.manual_seed(2)
        with single_thread():
            losses = torch.stack([prior.loss(x.float(), generator=gen) for x in chunks])
        losses = losses.double()
        return losses.mean().item(), losses.std().item() / math.sqrt(len(losses))

    reference = prior.gaussian_reference_loss(lam)
    mean, stderr = monte_carlo(1.0)
    assert abs(mean - reference) < 4 * stderr + 1e-3
    worse, _ = monte_carlo(0.8)
    assert worse > reference + 10 * stderr


def test_gaussian_reference_rejects_bad_spectra():
    prior = build_tiny_prior("mlp", d_model=4)
    with pytest.raises(ValueError, match="d_model=4"):
        prior.gaussian_reference_loss(torch.ones(3))
    with pytest.raises(ValueError, match="non-negative"):
        prior.gaussian_reference_loss(torch.tensor([1.0, 1.0, -0.5, 1.0]))
    # Round-off negatives from eigvalsh count as zero.
    tiny = prior.gaussian_reference_loss(torch.tensor([1.0, 1.0, -1e-12, 1.0]))
    assert tiny == pytest.approx(0.75 * math.pi / 2)


# --------------------------------------------------------------- trained on a curved manifold
@pytest.fixture(scope="module")
def trained():
    """A small MLP prior fitted for a few seconds to a torus embedded in 16 dims."""
    return train_on_manifold()


def test_trained_loss_beats_the_gaussian_reference(trained):
    prior, manifold, _ = trained
    held_out = manifold.sample(20_000, torch.Generator().manual_seed(5))
    z = prior.normalizer.normalize(held_out).double()
    reference = prior.gaussian_reference_loss(torch.linalg.eigvalsh(torch.cov(z.T)))
    with torch.no_grad(), single_thread():
        loss = prior.loss(held_out, generator=torch.Generator().manual_seed(1)).item()
    assert loss < 0.85 * reference


def test_samples_land_nearer_the_manifold_than_a_fitted_gaussian(trained):
    prior, manifold, data = trained
    with single_thread():
        samples = prior.sample(1000, num_steps=50, generator=torch.Generator().manual_seed(2))
    gaussian = manifold.gaussian_fit_samples(data, 1000, torch.Generator().manual_seed(3))
    prior_dist = manifold.distance_to_manifold(samples).mean()
    gaussian_dist = manifold.distance_to_manifold(gaussian).mean()
    assert prior_dist < 0.35 * gaussian_dist


def test_denoise_pulls_perturbed_points_back_to_the_manifold(trained):
    prior, manifold, data = trained
    gen = torch.Generator().manual_seed(4)
    clean = manifold.sample(1000, gen, noise_std=0.0)
    perturbed = clean + 0.3 * data.std(0) * torch.randn(clean.shape, generator=gen)
    with single_thread():
        denoised = prior.denoise(perturbed, t_start=0.3, num_steps=20, generator=gen)
    before = manifold.distance_to_manifold(perturbed).mean()
    after = manifold.distance_to_manifold(denoised).mean()
    assert after < 0.5 * before


def test_mismatched_gaussian_reference_matches_monte_carlo():
    """The linear predictor built for variances lam, scored on data of variances m."""
    prior = build_tiny_prior("mlp", d_model=6)
    lam = torch.tensor([1e-3, 0.05, 0.3, 1.0, 2.5, 40.0], dtype=torch.float64)
    m = lam * torch.tensor([3.0, 0.5, 1.2, 1.0, 0.8, 1.5], dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    n = 400_000
    x = torch.randn(n, 6, generator=gen, dtype=torch.float64) * m.sqrt()
    eps = torch.randn(n, 6, generator=gen, dtype=torch.float64)
    t = torch.rand(n, 1, generator=gen, dtype=torch.float64)
    z_t = (1 - t) * x + t * eps
    gain = (t - (1 - t) * lam) / ((1 - t) ** 2 * lam + t**2)
    mc = ((eps - x) - gain * z_t).square().mean().item()
    ref = prior.gaussian_reference_loss(lam, m)
    assert ref == pytest.approx(mc, rel=0.01)
    assert ref > prior.gaussian_reference_loss(m)  # the predictor built for m does better on m
    assert prior.gaussian_reference_loss(lam, lam) == pytest.approx(
        prior.gaussian_reference_loss(lam), rel=1e-9
    )
