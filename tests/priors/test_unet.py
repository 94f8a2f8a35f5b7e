import copy
import math

import pytest
import torch
from diffusers import DDIMScheduler
from torch.nn import functional as F

from tests.priors.helpers import SyntheticManifold, build_tiny_prior, randomize_
from tl_diffusion_prior.priors import load_prior
from tl_diffusion_prior.priors.grid import layout_from_samples
from tl_diffusion_prior.priors.unet import UNetPrior
from tl_diffusion_prior.priors.unet_config import CPU_UNET, WRITEUP_UNET, UNetPriorConfig

NAMES = dict(hook_name="blocks.15.hook_resid_post", model_name="SmolLM2-135M-Instruct")


def tiny(d_model: int = 24, **overrides) -> UNetPrior:
    return build_tiny_prior("unet", d_model=d_model, **overrides)


def fitted_tiny(d_model: int = 24, seed: int = 0, **overrides) -> UNetPrior:
    prior = randomize_(tiny(d_model, **overrides), seed=seed)
    return prior


# --------------------------------------------------------------------------- configs / presets
@pytest.mark.parametrize("name", ["cpu", "writeup"])
def test_presets_build_for_576(name):
    prior = UNetPrior(UNetPriorConfig.preset(name, d_model=576, **NAMES))
    assert prior.config.grid_shape == [24, 24]
    unet_cfg = prior.network.unet.config
    expected = WRITEUP_UNET if name == "writeup" else CPU_UNET
    for key, value in expected.items():
        got = unet_cfg[key]
        assert (list(got) if isinstance(got, tuple) else got) == value, key
    assert unet_cfg.sample_size in ([24, 24], (24, 24))
    assert unet_cfg.out_channels == 1
    assert prior.num_parameters > 0
    assert (prior.network.gaussian is not None) == (name == "cpu")


def test_writeup_preset_matches_the_writeup():
    cfg = UNetPriorConfig.preset("writeup", d_model=5120, **NAMES)
    assert cfg.grid_shape == [64, 80]  # 5120 cells, no padding, 3-block UNet divides both
    assert cfg.unet["block_out_channels"] == [128, 256, 512]
    assert cfg.unet["layers_per_block"] == 2
    assert cfg.unet["down_block_types"] == ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D"]
    assert cfg.unet["up_block_types"] == ["UpBlock2D", "AttnUpBlock2D", "UpBlock2D"]
    assert cfg.layout == "identity" and not cfg.gaussian_skip and cfg.position_channels == 0
    # the write-up's own 32x160 grid is accepted too
    assert UNetPriorConfig.preset("writeup", d_model=5120, grid_shape=[32, 160], **NAMES)


def test_patches_of_the_grid_become_channels_at_a_coarser_resolution():
    prior = UNetPrior(UNetPriorConfig.preset("cpu", d_model=576, patch_size=4, **NAMES))
    assert prior.config.grid_shape == [16, 48]  # 4 * 2**2 = 16 divides both sides
    assert prior.config.unet_resolution == [4, 12]
    unet_cfg = prior.network.unet.config
    assert list(unet_cfg.sample_size) == [4, 12]
    assert (unet_cfg.in_channels, unet_cfg.out_channels) == (16, 16)
    # with position channels every cell's extra channels travel in the same patch
    small = tiny(22, patch_size=2)
    assert small.network.unet.config.in_channels == (1 + 2) * 4
    seen = []
    handle = small.network.unet.register_forward_pre_hook(lambda m, a: seen.append(a[0].shape))
    try:
        out = randomize_(small).denoise(torch.randn(3, 22), t_start=0.5, num_steps=2)
    finally:
        handle.remove()
    height, width = small.config.grid_shape
    assert seen[0] == (3, 12, height // 2, width // 2)
    assert out.shape == (3, 22) and torch.isfinite(out).all()


def test_each_patch_channel_is_one_grid_cell():
    # The UNet's output channel c at coarse cell (i, j) must land on grid cell
    # (p i + c // p, p j + c % p): a one-hot output there is un-gridded to exactly that dim.
    prior = tiny(22, patch_size=2, gaussian_skip=False)
    p, width = 2, prior.config.grid_shape[1]
    cell_of_dim = prior.network.layout.cell_of_dim
    for dim in (0, 7, 21):
        row, col = divmod(int(cell_of_dim[dim]), width)
        channel = (row % p) * p + col % p

        def one_hot(module, args, out, channel=channel, row=row, col=col):
            out.sample.zero_()
            out.sample[:, channel, row // p, col // p] = 1.0

        handle = prior.network.unet.register_forward_hook(one_hot)
        try:
            with torch.no_grad():
                eps = prior.network(torch.zeros(1, 22), torch.tensor(10))
        finally:
            handle.remove()
        assert eps[0].nonzero().flatten().tolist() == [dim]


def test_config_round_trips_through_dict():
    cfg = UNetPriorConfig.preset("cpu", d_model=130, **NAMES)
    again = UNetPriorConfig.from_dict(cfg.to_dict())
    assert again == cfg
    assert again.grid_shape == [12, 12]


@pytest.mark.parametrize(
    "overrides, match",
    [
        (dict(unet=dict(norm_num_groups=24)), "norm_num_groups"),
        (dict(unet=dict(block_out_channels=[32, 64])), "one block type per resolution"),
        (dict(unet=dict(sample_size=24)), "derives"),
        (dict(grid_shape=[22, 28]), "divisible"),
        (dict(grid_shape=[4, 8]), "cells are fewer"),
        (dict(scheduler=dict(clip_sample=True)), "clip_sample"),
        (dict(scheduler=dict(prediction_type="v_prediction")), "prediction_type"),
        (dict(layout="random"), "layout"),
        (dict(position_channels=-1), "position_channels"),
        (dict(unet=dict(attention_head_dim=24)), "attention_head_dim"),
        (dict(patch_size=0), "patch_size"),
        (dict(patch_size=5, grid_shape=[24, 24]), "patch_size \\* 2\\*\\*\\(n_blocks-1\\)=20"),
    ],
)
def test_config_rejects_bad_values(overrides, match):
    with pytest.raises(ValueError, match=match):
        UNetPriorConfig(d_model=576, **NAMES, **overrides)


def test_scheduler_is_ddpm_epsilon_without_clipping():
    prior = tiny()
    cfg = prior.noise_scheduler.config
    assert cfg.clip_sample is False
    assert cfg.prediction_type == "epsilon"
    assert cfg.num_train_timesteps == 1000
    assert cfg.beta_schedule == "linear" and cfg.timestep_spacing == "trailing"


# ------------------------------------------------------------------------------ noise levels
def test_timestep_matches_flow_snr():
    prior = tiny()
    ab = prior._alphas_cumprod
    assert prior.timestep_for_t(1.0) == 999
    k = prior.timestep_for_t(0.5)
    # flow SNR at t = 0.5 is 1, i.e. alpha_bar = 0.5
    assert abs(float(ab[k]) - 0.5) < 0.01
    ks = [prior.timestep_for_t(t) for t in (0.05, 0.2, 0.5, 0.8, 0.95)]
    assert ks == sorted(ks) and len(set(ks)) == 5


def test_ddim_sampling_matches_diffusers_ddim_scheduler():
    prior = fitted_tiny()
    noise = torch.randn(5, 24, generator=torch.Generator().manual_seed(3))
    # 5 divides 1000: DDIMScheduler steps to `t - 1000 // n`, which for other n is not the next
    # timestep of its own trailing schedule, while our DDIM always lands on the next one.
    ours = prior._sample_normalized(noise, 5)
    sched = DDIMScheduler.from_config(
        prior.noise_scheduler.config, set_alpha_to_one=True, timestep_spacing="trailing"
    )
    sched.set_timesteps(5)
    x = noise.clone()
    with torch.no_grad():
        for k in sched.timesteps:
            x = sched.step(prior.network(x, k), k, x).prev_sample
    torch.testing.assert_close(ours, x, atol=1e-4, rtol=1e-4)


def test_one_step_denoise_is_the_x0_estimate():
    prior = fitted_tiny()
    x = torch.randn(4, 24) * prior.normalizer.std + prior.normalizer.mean
    noise = torch.randn(4, 24)
    t = 0.4
    out = prior.denoise(x, t_start=t, num_steps=1, noise=noise)
    k = prior.timestep_for_t(t)
    ab = float(prior._alphas_cumprod[k])
    with torch.no_grad():
        z = prior.normalizer.normalize(x)
        z_t = math.sqrt(ab) * z + math.sqrt(1 - ab) * noise
        eps = prior.network(z_t, torch.full((4,), k))
        expected = prior.normalizer.denormalize((z_t - math.sqrt(1 - ab) * eps) / math.sqrt(ab))
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-4)


def test_denoise_makes_exactly_num_steps_evaluations_from_the_matched_timestep():
    prior = fitted_tiny()
    seen = []
    handle = prior.network.register_forward_pre_hook(lambda m, args: seen.append(int(args[1])))
    try:
        prior.denoise(torch.randn(3, 24), t_start=0.5, num_steps=7)
    finally:
        handle.remove()
    assert len(seen) == 7
    assert seen[0] == prior.timestep_for_t(0.5)
    assert seen == sorted(seen, reverse=True) and seen[-1] < seen[0] / 7 + 1


def test_sampling_and_denoising_leave_the_training_scheduler_alone():
    prior = fitted_tiny()
    sched = prior.noise_scheduler
    before = (
        copy.deepcopy(dict(sched.config)),
        sched.timesteps.clone(),
        sched.num_inference_steps,
        sched.alphas_cumprod.clone(),
    )
    prior.sample(2, num_steps=3)
    prior.denoise(torch.randn(2, 24), t_start=0.3, num_steps=4)
    with torch.inference_mode():
        prior.denoise(torch.randn(2, 24), t_start=0.9, num_steps=2)
    assert dict(sched.config) == before[0]
    assert torch.equal(sched.timesteps, before[1])
    assert sched.num_inference_steps == before[2]
    assert torch.equal(sched.alphas_cumprod, before[3])


# ------------------------------------------------------------------ loss and Gaussian reference
def _gaussian_data(n: int, d: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    lam = torch.logspace(-2, 0.7, d, dtype=torch.float64)
    lam = lam / lam.mean()  # normalised data: unit average variance
    z = torch.randn(n, d, generator=gen, dtype=torch.float64) * lam.sqrt() @ basis.T
    return z.float(), lam


def test_gaussian_reference_matches_monte_carlo_of_optimal_linear_denoiser():
    d = 22  # a 4x6 grid with 2 padding cells
    prior = tiny(d)
    z, lam = _gaussian_data(20000, d)
    cov = torch.cov(z.T.double())
    gen = torch.Generator().manual_seed(1)
    k = torch.randint(0, 1000, (z.shape[0],), generator=gen)
    ab = prior._alphas_cumprod[k][:, None]
    eps = torch.randn(z.shape, generator=gen, dtype=torch.float64)
    x_t = ab.sqrt() * z.double() + (1 - ab).sqrt() * eps
    # E[eps | x_t] = s (a^2 C + s^2 I)^-1 x_t, per sample
    mats = ab[:, :, None] * cov + (1 - ab)[:, :, None] * torch.eye(d, dtype=torch.float64)
    eps_hat = (1 - ab).sqrt() * torch.linalg.solve(mats, x_t)
    mc = (eps_hat - eps).square().mean().item()
    ref = prior.gaussian_reference_loss(torch.linalg.eigvalsh(cov))
    assert abs(mc - ref) / ref < 0.02, (mc, ref)
    assert abs(prior.gaussian_reference_loss(lam) - ref) / ref < 0.05


@pytest.mark.parametrize("patch_size", [1, 2])
def test_fitted_gaussian_skip_starts_at_the_reference_and_ignores_padding(patch_size):
    d = 22
    prior = tiny(d, position_channels=0, patch_size=patch_size)
    z, _ = _gaussian_data(8000, d, seed=2)
    prior.set_normalization(torch.zeros(d), torch.ones(d) - prior.config.norm_eps)
    prior.fit_data(z)
    ref = prior.gaussian_reference_loss(torch.linalg.eigvalsh(torch.cov(z.T.double())))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        loss = prior.loss(z, generator=gen).item()
        # whatever the UNet writes into padding cells must not reach the loss
        # the padding cells as the UNet's output holds them: patches as channels
        mask = F.pixel_unshuffle(prior.network.layout.mask()[None, None].float(), patch_size)[0]

        def fill_padding(module, args, out):
            out.sample.masked_fill_(mask == 0, 1e3)

        handle = prior.network.unet.register_forward_hook(fill_padding)
        try:
            padded = prior.loss(z, generator=torch.Generator().manual_seed(0)).item()
        finally:
            handle.remove()
    assert abs(loss - ref) / ref < 0.03, (loss, ref)
    assert padded == loss


def test_gaussian_reference_rejects_wrong_eigenvalues():
    prior = tiny()
    with pytest.raises(ValueError, match="d_model=24"):
        prior.gaussian_reference_loss(torch.ones(23))


# ----------------------------------------------------------------------------- layout storage
def test_fit_data_needs_normalisation():
    prior = tiny()
    with pytest.raises(ValueError, match="set_normalization"):
        prior.fit_data(torch.randn(10, 24))


def test_spectral_layout_is_fitted_saved_and_loaded(tmp_path):
    d = 22
    manifold = SyntheticManifold(d=d)
    x = manifold.sample(2000, generator=torch.Generator().manual_seed(0))
    prior = tiny(d, layout="spectral")
    prior.set_normalization(x.mean(0), x.var(0))
    assert torch.equal(prior.network.layout.cell_of_dim, torch.arange(d))
    prior.fit_data(x)
    cells = prior.network.layout.cell_of_dim.clone()
    assert not torch.equal(cells, torch.arange(d))
    assert sorted(cells.tolist()) == sorted(set(cells.tolist()))
    randomize_(prior)
    prior.set_normalization(x.mean(0), x.var(0))
    prior.save_pretrained(tmp_path / "p")
    loaded = load_prior(tmp_path / "p")
    assert isinstance(loaded, UNetPrior)
    assert loaded.config.layout == "spectral"
    assert torch.equal(loaded.network.layout.cell_of_dim, cells)
    assert torch.equal(loaded.network.gaussian.eigvecs, prior.network.gaussian.eigvecs)
    noise = torch.randn(5, d)
    torch.testing.assert_close(
        loaded.denoise(x[:5], 0.5, 3, noise=noise), prior.denoise(x[:5], 0.5, 3, noise=noise)
    )


def test_fit_layout_fits_the_configured_layout_and_leaves_the_config_alone():
    d = 22
    x = SyntheticManifold(d=d).sample(1000, generator=torch.Generator().manual_seed(1))
    identity = tiny(d, layout="identity", gaussian_skip=False)
    identity.set_normalization(x.mean(0), x.var(0))
    identity.fit_data(x)  # identity layout and no skip: nothing to fit
    assert torch.equal(identity.network.layout.cell_of_dim, torch.arange(d))
    with pytest.raises(ValueError, match="layout='spectral'"):
        identity.fit_layout(x)
    prior = tiny(d, layout="spectral", layout_path="snake", gaussian_skip=False)
    config = copy.deepcopy(prior.config)
    prior.set_normalization(x.mean(0), x.var(0))
    prior.fit_layout(x)
    assert prior.config == config
    expected = layout_from_samples(prior.normalizer.normalize(x), 4, 6, "snake")
    assert torch.equal(prior.network.layout.cell_of_dim, expected)


def test_low_precision_keeps_gaussian_statistics_in_float32():
    prior = fitted_tiny().to(torch.bfloat16)
    assert prior.network.gaussian.eigvecs.dtype == torch.float32
    assert prior.network.unet.conv_in.weight.dtype == torch.bfloat16
    out = prior.denoise(torch.randn(3, 24, dtype=torch.bfloat16), 0.5, 2)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()


# ------------------------------------------------------------------------------------ learning
@pytest.fixture(scope="module")
def trained_on_manifold():
    torch.manual_seed(0)
    d = TRAIN_D
    manifold = SyntheticManifold(d=d, seed=0)
    data = manifold.sample(4096, generator=torch.Generator().manual_seed(0))
    prior = tiny(d, **TRAIN_OVERRIDES)
    prior.set_normalization(data.mean(0), data.var(0))
    prior.fit_data(data)
    opt = torch.optim.AdamW(prior.parameters(), lr=TRAIN_LR, weight_decay=0.0)
    gen = torch.Generator().manual_seed(1)
    for _ in range(TRAIN_STEPS):
        batch = data[torch.randint(0, data.shape[0], (TRAIN_BATCH,), generator=gen)]
        loss = prior.loss(batch, generator=gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return prior, manifold, data


TRAIN_D = 16
TRAIN_STEPS = 200
TRAIN_LR = 3e-3
TRAIN_BATCH = 128
# Small and attention-free so 200 steps take seconds; the Gaussian skip and position channels of
# the CPU preset stay on. Seeds 0-2 gave loss/ref 0.83-0.85, sample distance 0.70-0.72 of the
# Gaussian's and denoised distance 0.51-0.56 of the perturbed one.
TRAIN_OVERRIDES: dict = dict(
    unet=dict(
        block_out_channels=[16, 16],
        layers_per_block=1,
        down_block_types=["DownBlock2D", "DownBlock2D"],
        up_block_types=["UpBlock2D", "UpBlock2D"],
        norm_num_groups=8,
        attention_head_dim=8,
    ),
    position_channels=2,
)


def test_trained_loss_beats_gaussian_reference(trained_on_manifold):
    prior, manifold, data = trained_on_manifold
    held = manifold.sample(4096, generator=torch.Generator().manual_seed(7))
    z = prior.normalizer.normalize(held)
    ref = prior.gaussian_reference_loss(torch.linalg.eigvalsh(torch.cov(z.T.double())))
    with torch.no_grad():
        loss = prior.loss(held, generator=torch.Generator().manual_seed(8)).item()
    assert loss < 0.93 * ref, (loss, ref)


def test_trained_samples_are_nearer_the_manifold_than_a_gaussian(trained_on_manifold):
    prior, manifold, data = trained_on_manifold
    samples = prior.sample(512, num_steps=20, generator=torch.Generator().manual_seed(2))
    gauss = manifold.gaussian_fit_samples(data, 512, generator=torch.Generator().manual_seed(3))
    ours = manifold.distance_to_manifold(samples).median()
    base = manifold.distance_to_manifold(gauss).median()
    assert ours < 0.85 * base, (ours, base)


def test_trained_denoise_pulls_points_toward_the_manifold(trained_on_manifold):
    prior, manifold, data = trained_on_manifold
    clean = manifold.sample(256, generator=torch.Generator().manual_seed(4))
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(5))
    perturbed = clean + data.std(0) * noise
    out = prior.denoise(perturbed, t_start=0.6, num_steps=10, generator=torch.Generator())
    before = manifold.distance_to_manifold(perturbed).median()
    after = manifold.distance_to_manifold(out).median()
    assert after < 0.7 * before, (after, before)
