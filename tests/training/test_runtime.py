import contextlib

import torch

from tests.training.helpers import tiny_config
from tl_diffusion_prior.core import precision
from tl_diffusion_prior.training.runtime import autocast, derive_seed


def test_derived_seeds_are_reproducible_distinct_and_63_bit():
    seeds = {derive_seed(0, rank, stream) for rank in range(4) for stream in range(1, 5)}
    assert len(seeds) == 16 and all(0 <= s < 2**63 for s in seeds)
    assert derive_seed(0, 1, 2) == derive_seed(0, 1, 2) != derive_seed(1, 1, 2)


def test_auto_uses_bf16_on_cpus_with_hardware_bf16(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: True)
    assert isinstance(autocast(tiny_config(autocast="auto"), cpu), torch.autocast)
    assert isinstance(autocast(tiny_config(autocast="off"), cpu), contextlib.nullcontext)
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: False)
    assert isinstance(autocast(tiny_config(autocast="auto"), cpu), contextlib.nullcontext)
    assert isinstance(autocast(tiny_config(autocast="bf16"), cpu), torch.autocast)
