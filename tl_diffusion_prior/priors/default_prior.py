"""The trained prior shipped inside the package, for the default model's default hook.

``load_default_prior()`` returns an :class:`~tl_diffusion_prior.priors.mlp.MLPPrior` over
``blocks.15.hook_resid_post`` of SmolLM2-135M-Instruct, trained by the package's own ``train``
command on the packaged corpus. Its ``training_record`` holds the exact command, the commit, the
samples seen, the wall-clock and the machine, so it can be reproduced. The weights are stored in
bfloat16 (the file stays under 32 MB; the held-out loss it reaches is recorded in the README).
They load as bfloat16 where the device computes it natively (CPUs with AVX512-BF16 or AMX, CUDA
GPUs from Ampere on) and as float32 elsewhere: denoising is then 2.6-3.4x faster on such a CPU
(``benchmarks/steer.py``, ``benchmarks/denoise_steps.py``) and its result differs from float32's by
about 0.3% of what denoising changes, where another noise draw changes it by 120-130%. On the
command line, ``--prior default`` names it.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from tl_diffusion_prior.constants import CONFIG_NAME, DEFAULT_PRIOR_DIRNAME
from tl_diffusion_prior.core.precision import AUTO_DTYPE
from tl_diffusion_prior.priors.base import DiffusionPrior, load_prior

#: What ``--prior`` takes to mean the shipped prior (a local folder of that name: ``./default``).
DEFAULT_PRIOR_NAME = "default"
DEFAULT_PRIOR_DIR = Path(__file__).with_name(DEFAULT_PRIOR_DIRNAME)


def default_prior_dir() -> Path:
    """The shipped prior's folder; a clear error when this installation lacks it."""
    if not (DEFAULT_PRIOR_DIR / CONFIG_NAME).is_file():
        raise FileNotFoundError(
            f"The shipped default prior is missing from {DEFAULT_PRIOR_DIR}: this installation "
            "was built without its package data. Reinstall tl_diffusion_prior from a clone "
            "(pip install -e .) or from a wheel, or train one with `tl-diffusion-prior train`."
        )
    return DEFAULT_PRIOR_DIR


def resolve_prior_dir(value: str | os.PathLike) -> Path:
    """``value`` as a prior folder: ``"default"`` is the shipped prior, anything else a path."""
    if str(value) == DEFAULT_PRIOR_NAME:
        return default_prior_dir()
    return Path(value)


def load_default_prior(
    device: str | torch.device | None = None, dtype: torch.dtype | str = AUTO_DTYPE
) -> DiffusionPrior:
    """The shipped MLP prior for ``blocks.15.hook_resid_post`` of SmolLM2-135M-Instruct.

    Args:
        device: where to put it (None: CPU).
        dtype: the weights' dtype: ``"auto"`` (bfloat16 where ``device`` computes it natively,
            else float32; see the module docstring), ``torch.float32`` or ``torch.bfloat16``.
            The normaliser and the Gaussian skip stay float32 whatever the dtype, and
            ``denoise`` returns the input's dtype.
    """
    return load_prior(default_prior_dir(), device=device, dtype=dtype)
