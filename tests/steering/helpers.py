"""Test helpers for steering: a deterministic recording prior and hook-state inspection."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from tl_diffusion_prior.core.lens import LensModel
from tl_diffusion_prior.priors.base import DiffusionPrior, PriorConfig
from tl_diffusion_prior.steering.noise import position_noise, prefix_keys
from tl_diffusion_prior.steering.positions import real_positions


class RecordingPrior(DiffusionPrior):
    """Denoises to ``0.5 z + noise_scale * noise`` (0.1 by default) in normalised space and records
    every call.

    Training is irrelevant to the steering plumbing; this prior is exact, cheap and shows which
    noise (hence which positions) each call received.
    """

    config_class = PriorConfig

    def __init__(
        self,
        d_model: int,
        hook_name: str,
        model_name: str,
        fail: bool = False,
        noise_scale: float = 0.1,
    ):
        super().__init__(
            PriorConfig(
                architecture="recording",
                d_model=d_model,
                hook_name=hook_name,
                model_name=model_name,
            )
        )
        self.anchor = nn.Parameter(torch.zeros(()))
        self.calls: list[dict] = []
        self.fail = fail
        self.noise_scale = noise_scale

    def _denoise_normalized(self, z, t_start, num_steps, noise):
        if self.fail:
            raise RuntimeError("prior failure inside the hook")
        self.calls.append(
            dict(n=z.shape[0], dtype=z.dtype, t=t_start, steps=num_steps, noise=noise.clone())
        )
        return 0.5 * z + self.noise_scale * noise

    def _loss_normalized(self, z, generator, levels=None):
        return z.square().mean()

    def add_noise(self, z, noise, t):
        return torch.lerp(z, noise.to(z.dtype), t)

    def posterior_mean(self, z_t, t):
        return z_t

    def _sample_normalized(self, noise, num_steps):
        return noise

    def gaussian_reference_loss(self, cov_eigenvalues, data_second_moments=None):
        return 0.0

    def recorded_positions(
        self,
        model: LensModel,
        seed: int,
        tokens: Tensor,
        attention_mask: Tensor | None = None,
    ) -> set[tuple[int, int]]:
        """The (row, absolute position) pairs of ``tokens`` whose noise the recorded calls received.

        The expected noise of every position is rebuilt from an unsteered forward pass over the
        whole sequence (call this after detaching): its sequence key, from the first block's
        input, and its position counted from the row's first real token.
        """
        batch, length = tokens.shape
        with torch.inference_mode():  # generate's outputs are inference tensors
            _, cache = model.run_with_cache(
                tokens, attention_mask=attention_mask, names_filter=["blocks.0.hook_resid_pre"]
            )
        real, positions = real_positions(attention_mask, batch, 0, length, tokens.device)
        keys = prefix_keys(cache["blocks.0.hook_resid_pre"], real, positions)
        noise = position_noise(seed, keys.flatten(), positions.flatten(), self.config.d_model)
        lookup = {}
        for index, vec in enumerate(noise):
            lookup[tuple(vec[:4].to(self.dtype).tolist())] = divmod(index, length)
        found = set()
        for call in self.calls:
            for vec in call["noise"]:
                found.add(lookup[tuple(vec[:4].tolist())])
        return found


def hook_state(model: LensModel) -> dict:
    """Everything steering may add to a model, to compare before/after."""
    return {
        "hook_names": sorted(model.hook_dict),
        "fwd_hooks": {name: len(hp.fwd_hooks) for name, hp in model.hook_dict.items()},
        "block_pre_hooks": [len(block._forward_pre_hooks) for block in model.blocks],
        "generate_patched": {"generate", "generate_stream"} & set(model.__dict__),
    }


def greedy(model: LensModel, tokens: Tensor, n: int, use_cache: bool = True, **kwargs) -> Tensor:
    return model.generate(
        tokens,
        max_new_tokens=n,
        do_sample=False,
        stop_at_eos=False,
        verbose=False,
        use_past_kv_cache=use_cache,
        **kwargs,
    )
