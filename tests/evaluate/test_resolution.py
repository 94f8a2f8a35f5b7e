import pytest
import torch

from tl_diffusion_prior.evaluate.fidelity import FidelityResult
from tl_diffusion_prior.evaluate.resolution import half_width, paired_difference, resolution
from tl_diffusion_prior.evaluate.stats import bootstrap_ci


def _result(method, deltas, dataset="heldout", condition="reconstruct", groups=None):
    deltas = torch.as_tensor(deltas, dtype=torch.float64)
    per_group = {}
    if groups is not None:
        for name in dict.fromkeys(groups):
            index = torch.tensor([g == name for g in groups])
            per_group[name] = bootstrap_ci(deltas[index], n_resamples=200)
    return FidelityResult(
        method,
        {},
        dataset,
        condition,
        bootstrap_ci(deltas, n_resamples=200),
        0.1,
        0.1,
        10,
        0.0,
        per_group=per_group,
        window_deltas=deltas,
    )


def test_paired_interval_is_far_narrower_than_either_methods_own():
    # Windows differ a lot in difficulty; method b is a steady 0.05 nats worse than a.
    difficulty = torch.linspace(0.0, 2.0, 64, dtype=torch.float64)
    noise = 0.01 * torch.randn(64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    a, b = _result("a", difficulty), _result("b", difficulty + 0.05 + noise)
    diff = paired_difference(b, a, torch.arange(64), n_resamples=500)
    assert diff.low > 0.04 and diff.high < 0.06
    assert half_width(diff) < half_width(a.delta_lm) / 10


def test_paired_difference_refuses_results_from_other_windows():
    a = _result("a", [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="same windows"):
        paired_difference(a, _result("b", [0.1, 0.2]), torch.arange(3))
    with pytest.raises(ValueError, match="same windows"):
        paired_difference(a, _result("b", [0.1, 0.2, 0.3], dataset="pydoc"), torch.arange(3))


def test_resolution_summarises_every_pair_and_source_and_skips_the_identity():
    g = torch.Generator().manual_seed(1)
    groups = ("x",) * 20 + ("y",) * 20
    results = [
        _result(m, torch.rand(40, generator=g, dtype=torch.float64), groups=groups)
        for m in ("identity", "p", "q", "r")
    ]
    out = resolution(results, {"heldout": torch.arange(40)}, ["reconstruct"], n_resamples=200)
    entry = out["heldout"]["reconstruct"]
    assert entry["n_pairs"] == 3  # p-q, p-r, q-r
    assert 0 < entry["paired_median"] <= entry["paired_max"]
    assert set(entry["unpaired_per_group"]) == {"x", "y"}
    # A source has half the windows, so its figures are less precise than the pooled ones.
    assert entry["unpaired_per_group"]["x"] > entry["unpaired_median"]
    assert resolution(results, {"heldout": torch.arange(40)}, ["noise std=1"]) == {}
