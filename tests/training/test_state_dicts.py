import json
import random

import numpy as np
import pytest
import torch

from tl_diffusion_prior.training import state_dicts


def test_optimizer_state_round_trip_continues_identically():
    def make():
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 3)
        return model, torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.8, 0.95))

    def step(model, opt, seed):
        x = torch.randn(8, 4, generator=torch.Generator().manual_seed(seed))
        model(x).square().mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    model_a, opt_a = make()
    for seed in range(3):
        step(model_a, opt_a, seed)
    tensors, meta = state_dicts.optimizer_state(opt_a)
    json.dumps(meta)  # JSON-able
    model_b, opt_b = make()
    model_b.load_state_dict(model_a.state_dict())
    tensors = {k: v.clone() for k, v in tensors.items()}  # as if read back from disk
    state_dicts.load_optimizer_state(opt_b, tensors, json.loads(json.dumps(meta)))
    assert opt_b.param_groups[0]["betas"] == (0.8, 0.95)
    step(model_a, opt_a, 10)
    step(model_b, opt_b, 10)
    for a, b in zip(model_a.parameters(), model_b.parameters(), strict=True):
        assert torch.equal(a, b)


def test_rng_state_round_trip():
    gen = torch.Generator().manual_seed(3)
    tensors, meta = state_dicts.rng_state({"batch": gen})
    meta = json.loads(json.dumps(meta))
    expected = (torch.rand(3, generator=gen), torch.rand(3), random.random(), np.random.rand())
    torch.rand(5, generator=gen)
    state_dicts.load_rng_state({"batch": gen}, tensors, meta)
    got = (torch.rand(3, generator=gen), torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
    assert got[2:] == expected[2:]
    with pytest.raises(ValueError, match="generator 'noise'"):
        state_dicts.load_rng_state({"noise": gen}, tensors, meta)


def test_split_and_join_state():
    state = {"histogram": torch.ones(2), "position": {"batches": 3}, "count": 5}
    tensors, rest = state_dicts.split_state(state, "refill/")
    assert list(tensors) == ["refill/histogram"] and rest == {
        "position": {"batches": 3},
        "count": 5,
    }
    joined = state_dicts.join_state({**tensors, "other/x": torch.zeros(1)}, rest, "refill/")
    assert joined.keys() == state.keys() and torch.equal(joined["histogram"], state["histogram"])
