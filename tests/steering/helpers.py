"""Test helpers for steering: a deterministic recording prior and hook-state inspection."""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor, nn
from transformer_lens import HookedTransformer

from tl_diffusion_prior.priors.base import DiffusionPrior, PriorConfig
from tl_diffusion_prior.steering.noise import position_noise


class RecordingPrior(DiffusionPrior):
    """Denoises to ``0.5 z + 0.1 noise`` in normalised space and records every call.

    Training is irrelevant to the steering plumbing; this prior is exact, cheap and shows which
    noise (hence which positions) each call received.
    """

    config_class = PriorConfig

    def __init__(self, d_model: int, hook_name: str, model_name: str, fail: bool = False):
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

    def _denoise_normalized(self, z, t_start, num_steps, noise):
        if self.fail:
            raise RuntimeError("prior failure inside the hook")
        self.calls.append(
            dict(n=z.shape[0], dtype=z.dtype, t=t_start, steps=num_steps, noise=noise.clone())
        )
        return 0.5 * z + 0.1 * noise

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

    def recorded_positions(self, seed: int, batch: int, length: int) -> set[tuple[int, int]]:
        """The (row, absolute position) pairs whose noise the recorded calls received."""
        d = self.config.d_model
        lookup = {}
        for row in range(batch):
            rows = torch.full((length,), row)
            noise = position_noise(seed, rows, torch.arange(length), d)
            for pos in range(length):
                lookup[tuple(noise[pos, :4].to(self.dtype).tolist())] = (row, pos)
        found = set()
        for call in self.calls:
            for vec in call["noise"]:
                found.add(lookup[tuple(vec[:4].tolist())])
        return found


def hook_state(model: HookedTransformer) -> dict:
    """Everything steering may add to a model, to compare before/after."""
    return {
        "hook_names": sorted(model.hook_dict),
        "fwd_hooks": {name: len(hp.fwd_hooks) for name, hp in model.hook_dict.items()},
        "block_pre_hooks": [len(block._forward_pre_hooks) for block in model.blocks],
        "generate_patched": {"generate", "generate_stream"} & set(model.__dict__),
    }


def greedy(model: HookedTransformer, tokens: Tensor, n: int, use_cache: bool = True) -> Tensor:
    return model.generate(
        tokens,
        max_new_tokens=n,
        do_sample=False,
        stop_at_eos=False,
        verbose=False,
        use_past_kv_cache=use_cache,
    )


@contextlib.contextmanager
def single_thread():
    # Two cores shared by several processes: intra-op threads spin-wait on each other and make
    # tiny matmuls ~10x slower, so training fixtures run on one thread.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
