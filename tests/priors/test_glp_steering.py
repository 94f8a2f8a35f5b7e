"""A released prior steers a TransformerLens model through the package's steering hooks exactly
as the release post-processes a steered activation (noise to 0.4742, the last 10 of 20 steps)."""

from __future__ import annotations

import torch

from tl_diffusion_prior.priors import GLPPrior, load_prior, paper_steering_schedule
from tl_diffusion_prior.steering import steer

from .glp_release import (
    reference_on_manifold,
    release_config,
    release_statistics,
    release_tensors,
    write_release,
)

HOOK = "blocks.0.hook_resid_post"


def test_steering_with_a_released_prior_runs_the_release_post_processing(tmp_path, tiny_model):
    d = tiny_model.cfg.d_model
    sizes = dict(d_input=d, d_model=2 * d, d_mlp=4 * d)
    config = release_config(layers=[0], model_name=tiny_model.cfg.model_name, **sizes)
    tensors = release_tensors(**sizes, n_layers=2)
    stats = release_statistics(None, d_input=d)
    prior = load_prior(write_release(tmp_path / "glp", config, tensors, stats))
    assert type(prior) is GLPPrior and prior.config.hook_name == HOOK

    calls, seen = [], []
    prior.network.register_forward_hook(lambda *_: calls.append(1))
    denoise = prior.denoise

    def recording_denoise(x, *args, **kwargs):
        out = denoise(x, *args, **kwargs)
        seen.append((x.clone(), kwargs.get("noise"), out.clone(), args, kwargs))
        return out

    prior.denoise = recording_denoise
    t_start, num_steps = paper_steering_schedule()
    tokens = torch.randint(3, 300, (2, 5), generator=torch.Generator().manual_seed(0))
    vector = torch.randn(d, generator=torch.Generator().manual_seed(1))
    with steer(
        tiny_model,
        HOOK,
        vector,
        0.5,
        prior,
        scale_mode="relative",
        t_start=t_start,
        num_steps=num_steps,
        seed=3,
    ):
        _, cache = tiny_model.run_with_cache(tokens)
    assert len(seen) == 1 and len(calls) == num_steps == 10
    x, noise, out, args, kwargs = seen[0]
    used = dict(zip(("t_start", "num_steps"), args, strict=False), **kwargs)
    assert used["t_start"] == t_start and used["num_steps"] == 10 and noise is not None
    expected = reference_on_manifold(tensors, stats["mean"], stats["var"], x, noise)
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)
    # What the hook wrote is that output, at every position but the first.
    denoised = cache[f"{HOOK}.hook_denoised"][:, 1:].reshape(-1, d)
    torch.testing.assert_close(denoised, out.reshape(-1, d), rtol=0, atol=0)
