"""Files saved by the code before the one-package-per-stage layout (commit 6dcd1b9) still load.

``tests/fixtures/pre_layout`` holds two tiny priors (an MLP, and a UNet with a fitted spectral
layout, Gaussian skip and a ``training`` record in its config), a Gaussian baseline and a TopK SAE,
all saved by that commit, together with outputs that commit computed from them. Loading them with
today's code must give the same objects and the same outputs: bit-identical for the MLP, and for
the UNet within float32 convolution round-off, which differs between machines.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tl_diffusion_prior.evaluate.baselines.base import load_baseline
from tl_diffusion_prior.evaluate.baselines.gaussian import GaussianBaseline
from tl_diffusion_prior.evaluate.baselines.sae import TopKSAE
from tl_diffusion_prior.priors import MLPPrior, UNetPrior, load_prior

FIXTURES = Path(__file__).parent / "fixtures" / "pre_layout"


@pytest.fixture(scope="module")
def expected() -> dict[str, torch.Tensor]:
    return load_file(FIXTURES / "expected.safetensors")


@pytest.mark.parametrize("architecture, prior_cls", [("mlp", MLPPrior), ("unet", UNetPrior)])
def test_priors_saved_before_the_layout_change_load_unchanged(architecture, prior_cls, expected):
    prior = load_prior(FIXTURES / f"{architecture}_prior")
    assert type(prior) is prior_cls
    assert prior.config.hook_name == "blocks.0.hook_resid_post"
    assert prior.training_record["steps"] == 10
    out = prior.denoise(
        expected["x"], t_start=0.5, num_steps=4, noise=expected[f"{architecture}_noise"]
    )
    # The MLP's matmuls reproduce bit for bit; the UNet's float32 convolutions go through kernels
    # that the CPU and library build choose, which differ in the last bits between machines (about
    # 6e-6 on 2026-12-01's machine). A wrong load would differ by far more than this tolerance.
    tolerance = {"rtol": 0, "atol": 0} if architecture == "mlp" else {"rtol": 1e-4, "atol": 1e-5}
    torch.testing.assert_close(out, expected[f"{architecture}_denoise"], **tolerance)


def test_baselines_saved_before_the_layout_change_load_unchanged(expected):
    gaussian = load_baseline(FIXTURES / "gaussian")
    assert type(gaussian) is GaussianBaseline
    torch.testing.assert_close(
        gaussian.project(expected["x"], 5), expected["gaussian_project"], rtol=0, atol=0
    )
    sae = load_baseline(FIXTURES / "sae")
    assert type(sae) is TopKSAE
    torch.testing.assert_close(
        sae.reconstruct(expected["x"]), expected["sae_reconstruct"], rtol=0, atol=0
    )
