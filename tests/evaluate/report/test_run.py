import pytest


def test_run_covers_every_method_condition_and_dataset(tiny_run):
    report, _ = tiny_run
    conditions = {r.condition for r in report.results}
    assert conditions == {"reconstruct", "noise std=1", "steer ood-minus-heldout scale=0.25"}
    methods = {r.method for r in report.results}
    assert methods == {
        "identity",
        "PCA",
        "SAE",
        "Gaussian posterior mean",
        "Wiener filter",
        "mlp prior",
        "mlp prior one-step",
        "mlp prior round trip",
    }
    # Restoration names its protocols: the Wiener filter and the round trip only restore.
    for method in ("Wiener filter", "mlp prior round trip"):
        assert {r.condition for r in report.results if r.method == method} == {"noise std=1"}
    assert {r.dataset for r in report.results} == {"heldout", "pydoc"}
    # k above d_model is dropped; identity reconstruction is exact.
    assert {r.setting["k"] for r in report.results if r.method == "PCA"} == {4, 16}
    identity = [
        r for r in report.results if r.method == "identity" and r.condition == "reconstruct"
    ]
    assert all(r.delta_lm.mean == 0.0 for r in identity)
    assert report.loss_histories["mlp prior"]["train_loss"][-1] == pytest.approx(1.6)
    assert report.frechet["floor"]["n"] == 100
    # Only the prior's samples (target (c)) carry an interval, and it holds their ratio.
    with_interval = [r for r in report.frechet["results"] if r["normalized_ratio_ci"]]
    assert [r["name"] for r in with_interval] == ["mlp prior samples"]
    ci = with_interval[0]["normalized_ratio_ci"]
    assert ci["low"] <= with_interval[0]["normalized_ratio"] <= ci["high"]
    assert report.targets["c_frechet"]["mlp prior samples"]["interval"] == ci
    assert set(report.targets) >= {
        "a_restoration_heldout",
        "b_reconstruction_vs_sae",
        "b_equal_distortion",
        "c_frechet",
    }
    # Every delta-LM ratio carries its paired interval, over the documents of its data set
    # (heldout: 6 windows of 3 documents; pydoc: 4 of 4).
    ratios = {k: e for k, e in report.targets.items() if e.get("ratio") is not None}
    assert ratios
    for key, entry in ratios.items():
        assert entry["ratio_ci"]["low"] <= entry["ratio"] <= entry["ratio_ci"]["high"]
        assert entry["ratio_ci"]["n"] == (4 if "pydoc" in key else 3)


def test_run_reports_per_source_figures_and_its_resolution(tiny_run):
    report, _ = tiny_run
    heldout = [r for r in report.results if r.dataset == "heldout"]
    assert all(set(r.per_group) == {"one", "two"} for r in heldout)
    assert all(not r.per_group for r in report.results if r.dataset == "pydoc")
    assert report.datasets["heldout"]["windows_per_group"] == {"one": 4, "two": 2}
    entry = report.resolution["heldout"]["reconstruct"]
    assert 0 <= entry["paired_median"] <= entry["paired_max"]
    assert set(entry["unpaired_per_group"]) == {"one", "two"}
    assert "noise std=1" in report.resolution["pydoc"]
    assert "window_deltas" not in report.results[0].to_dict()
