import pytest
import torch

from tl_diffusion_prior.evaluate.fidelity import FidelityResult
from tl_diffusion_prior.evaluate.stats import ConfidenceInterval, bootstrap_ci
from tl_diffusion_prior.evaluate.targets import benchmark_targets, best_settings


def _result(method, setting, dataset, condition, delta, distortion):
    ci = ConfidenceInterval(delta, delta - 0.01, delta + 0.01, 10, 0.95)
    return FidelityResult(method, setting, dataset, condition, ci, distortion, distortion, 100, 0.0)


def _results():
    rows = []
    for k, delta, dist in [(16, 0.5, 0.6), (64, 0.2, 0.4), (256, 0.05, 0.2)]:
        rows.append(_result("PCA", {"k": k}, "heldout", "reconstruct", delta, dist))
        rows.append(_result("PCA", {"k": k}, "heldout", "noise std=1", delta + 0.3, dist))
    for (d_sae, k), delta, dist in [((1024, 16), 0.3, 0.5), ((2048, 64), 0.1, 0.3)]:
        rows.append(_result("SAE", {"d_sae": d_sae, "k": k}, "heldout", "reconstruct", delta, dist))
        rows.append(_result("SAE", {"d_sae": d_sae, "k": k}, "heldout", "noise std=1", 0.4, dist))
    for t, delta, dist in [(0.25, 0.01, 0.25), (0.5, 0.02, 0.45)]:
        rows.append(
            _result("mlp prior", {"t": t, "num_steps": 20}, "heldout", "reconstruct", delta, dist)
        )
    rows.append(
        _result("mlp prior", {"t": 0.5, "num_steps": 20}, "heldout", "noise std=1", 0.08, 0.5)
    )
    rows.append(
        _result(
            "mlp prior one-step", {"t": 0.5, "num_steps": 1}, "heldout", "noise std=1", 0.06, 0.5
        )
    )
    rows.append(_result("Gaussian posterior mean", {"t": 0.5}, "heldout", "noise std=1", 0.3, 0.5))
    rows.append(_result("Wiener filter", {"t": 0.5}, "heldout", "noise std=1", 0.25, 0.5))
    rows.append(
        _result(
            "mlp prior round trip", {"t": 0.5, "num_steps": 20}, "heldout", "noise std=1", 0.5, 0.5
        )
    )
    rows.append(_result("identity", {}, "pydoc", "noise std=1", 0.9, 1.0))
    rows.append(_result("mlp prior", {"t": 0.5, "num_steps": 20}, "pydoc", "noise std=1", 0.3, 0.5))
    return rows


def test_best_setting_per_method_says_why():
    best = best_settings(_results())
    pca = best["heldout | reconstruct | PCA"]
    assert pca["setting"] == {"k": 256}
    assert "3 settings" in pca["why"]
    assert best["heldout | reconstruct | SAE"]["setting"] == {"d_sae": 2048, "k": 64}


def test_benchmark_ratios():
    frechet = {
        "results": [{"name": "mlp prior samples", "normalized_ratio": 1.5, "raw_ratio": 3.0}],
        "floor": {"n": 5000},
        "n_heldout": 4000,
        "d_model": 100,
    }
    targets = benchmark_targets(
        _results(),
        frechet,
        prior_methods=["mlp prior", "mlp prior one-step"],
        multi_step_prior_methods=["mlp prior"],
        heldout="heldout",
        ood="pydoc",
    )
    a = targets["a_restoration_heldout"]
    assert a["ratio"] == pytest.approx(0.06 / 0.3 * 0.3 / 0.25)  # one-step prior vs Wiener
    assert a["met"] is True
    # The round trip is reported against the same best baseline, but is never the headline.
    assert targets["a_round_trip_heldout"]["ratio"] == pytest.approx(0.5 / 0.25)
    assert targets["a_round_trip_heldout"]["target"] is None
    assert targets["a_restoration_pydoc_vs_noise"]["ratio"] == pytest.approx(0.3 / 0.9)
    assert targets["a_restoration_pydoc_vs_noise"]["met"] is True  # <= 0.5
    b = targets["b_reconstruction_vs_sae"]
    assert b["ratio"] == pytest.approx(0.02 / 0.1) and b["met"] is True
    vs_pca = targets["b_equal_distortion"]["mlp prior"]["PCA"]
    assert vs_pca["fraction_below"] == 1.0 and vs_pca["below"] is True
    assert vs_pca["at_prior_t"]["reference"] == pytest.approx(0.2 + (0.45 - 0.4) / 0.2 * 0.3)
    assert targets["c_frechet"]["mlp prior samples"]["met"] is True
    assert targets["c_frechet"]["mlp prior samples"]["reliable"] is True
    frechet["d_model"] = 576  # 4000 held-out rows are < 20 per dimension
    small = benchmark_targets(
        _results(),
        frechet,
        prior_methods=["mlp prior"],
        multi_step_prior_methods=["mlp prior"],
        heldout="heldout",
        ood=None,
    )
    assert small["c_frechet"]["mlp prior samples"]["reliable"] is False


def test_targets_are_the_prior_quality_issues():
    # (b) <= 0.5 of the best SAE and (c) within 1.5x the floor: a reconstruction ratio of 0.4
    # meets (b), and the shipped prior's second version's Frechet ratio, 1.52, misses (c).
    rows = [r for r in _results() if not (r.method == "mlp prior" and r.condition == "reconstruct")]
    rows.append(
        _result("mlp prior", {"t": 0.5, "num_steps": 20}, "heldout", "reconstruct", 0.04, 0.3)
    )
    frechet = {
        "results": [{"name": "mlp prior samples", "normalized_ratio": 1.52, "raw_ratio": 3.0}],
        "floor": {"n": 20_000},
        "n_heldout": 20_000,
        "d_model": 100,
    }
    targets = benchmark_targets(
        rows,
        frechet,
        prior_methods=["mlp prior"],
        multi_step_prior_methods=["mlp prior"],
        heldout="heldout",
        ood=None,
    )
    b = targets["b_reconstruction_vs_sae"]
    assert b["ratio"] == pytest.approx(0.4) and b["target"] == 0.5 and b["met"] is True
    c = targets["c_frechet"]["mlp prior samples"]
    assert c["target"] == 1.5 and c["met"] is False


def test_missing_inputs_give_no_ratio():
    targets = benchmark_targets(
        [], None, prior_methods=[], multi_step_prior_methods=[], heldout="heldout", ood=None
    )
    assert targets["a_restoration_heldout"]["ratio"] is None
    assert "missing" in targets["a_restoration_heldout"]["reason"]
    assert targets["c_frechet"] == {}


def test_frechet_target_covers_every_prior_name_and_nothing_else():
    rows = [
        {"name": name, "normalized_ratio": ratio, "raw_ratio": ratio}
        for name, ratio in [("unet samples", 1.2), ("Gaussian fit samples", 1.0), ("unet", 3.0)]
    ]
    frechet = {"results": rows, "floor": {"n": 100}, "n_heldout": 100, "d_model": 4}
    targets = benchmark_targets(
        [],
        frechet,
        prior_methods=["unet"],
        multi_step_prior_methods=["unet"],
        heldout="h",
        ood=None,
    )
    assert set(targets["c_frechet"]) == {"unet samples", "unet"}
    assert targets["c_frechet"]["unet samples"]["normalized_ratio"] == 1.2


def _windowed(method, setting, condition, deltas, dataset="heldout"):
    """A result measured on windows, carrying its per-window deltas and their interval."""
    deltas = torch.as_tensor(deltas, dtype=torch.float64)
    ci = bootstrap_ci(deltas, n_resamples=200)
    return FidelityResult(
        method, setting, dataset, condition, ci, 0.3, 0.3, 100, 0.0, window_deltas=deltas
    )


def _windowed_results(n_docs=40, windows_per_doc=2, seed=0):
    """A prior at about half of the SAE's delta LM, window by window, under both headline
    conditions; window difficulty varies a lot and is shared by every method."""
    gen = torch.Generator().manual_seed(seed)
    n = n_docs * windows_per_doc
    difficulty = 0.1 + torch.rand(n_docs, generator=gen, dtype=torch.float64).repeat_interleave(
        windows_per_doc
    )
    noise = 0.005 * torch.randn(4, n, generator=gen, dtype=torch.float64)
    sae = {"d_sae": 64, "k": 8}
    prior = {"t": 0.5, "num_steps": 20}
    rows = [
        _windowed("SAE", sae, "noise std=1", difficulty + noise[0]),
        _windowed("mlp prior", prior, "noise std=1", 0.5 * difficulty + noise[1]),
        _windowed("SAE", sae, "reconstruct", difficulty + noise[2]),
        _windowed("mlp prior", prior, "reconstruct", 0.5 * difficulty + noise[3]),
    ]
    doc_ids = torch.arange(n_docs).repeat_interleave(windows_per_doc)
    return rows, doc_ids


def _ratio_targets(rows, doc_ids=None):
    targets = benchmark_targets(
        rows,
        None,
        prior_methods=["mlp prior"],
        multi_step_prior_methods=["mlp prior"],
        heldout="heldout",
        ood=None,
        doc_ids=doc_ids,
        n_resamples=500,
    )
    return targets["a_restoration_heldout"], targets["b_reconstruction_vs_sae"]


def test_ratio_intervals_are_paired_over_documents_and_hold_the_point_ratio():
    rows, doc_ids = _windowed_results()
    for entry in _ratio_targets(rows, {"heldout": doc_ids}):
        ci = entry["ratio_ci"]
        num, den = entry["numerator"]["delta_lm"], entry["denominator"]["delta_lm"]
        assert entry["ratio"] == pytest.approx(num / den)  # unchanged by the interval
        assert ci["low"] <= entry["ratio"] <= ci["high"]
        # Every window's prior delta is half its SAE delta (plus a little noise): the paired
        # interval is tight around 0.5 although each figure's own interval is wide.
        assert 0.47 < ci["low"] and ci["high"] < 0.53
        assert ci["n"] == 40 and ci["level"] == 0.95  # documents, not windows, are resampled
        n_ci, d_ci = entry["numerator"]["ci"], entry["denominator"]["ci"]
        naive = n_ci[1] / d_ci[0] - n_ci[0] / d_ci[1]
        assert ci["high"] - ci["low"] < naive / 5


def test_ratio_interval_is_none_without_window_deltas_or_documents():
    rows, doc_ids = _windowed_results()
    a, b = _ratio_targets(rows)  # no doc ids given
    assert a["ratio"] is not None and a["ratio_ci"] is None and b["ratio_ci"] is None
    a, _ = _ratio_targets(rows, {"pydoc": doc_ids})  # none for the held-out set
    assert a["ratio_ci"] is None
    for r in rows:
        r.window_deltas = None
    a, b = _ratio_targets(rows, {"heldout": doc_ids})
    assert a["ratio"] is not None and a["ratio_ci"] is None and b["ratio_ci"] is None
    missing = benchmark_targets(
        [], None, prior_methods=[], multi_step_prior_methods=[], heldout="heldout", ood=None
    )
    assert missing["a_restoration_heldout"]["ratio_ci"] is None


def test_out_of_domain_ratios_resample_their_own_documents():
    rows, heldout_ids = _windowed_results()
    pydoc, pydoc_ids = _windowed_results(n_docs=10, seed=1)
    for r in pydoc:
        r.dataset = "pydoc"
    identity = _windowed("identity", {}, "noise std=1", 4 * pydoc[0].window_deltas, "pydoc")
    targets = benchmark_targets(
        rows + pydoc + [identity],
        None,
        prior_methods=["mlp prior"],
        multi_step_prior_methods=["mlp prior"],
        heldout="heldout",
        ood="pydoc",
        doc_ids={"heldout": heldout_ids, "pydoc": pydoc_ids},
        n_resamples=500,
    )
    vs_noise, vs_baselines = (
        targets["a_restoration_pydoc_vs_noise"],
        targets["a_restoration_pydoc_vs_baselines"],
    )
    assert vs_noise["ratio_ci"]["n"] == vs_baselines["ratio_ci"]["n"] == 10
    assert vs_noise["ratio_ci"]["low"] < 0.125 < vs_noise["ratio_ci"]["high"] < 0.14
    assert vs_baselines["ratio_ci"]["low"] < 0.5 < vs_baselines["ratio_ci"]["high"]
