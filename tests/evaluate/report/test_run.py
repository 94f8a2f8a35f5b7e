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
        "mlp prior",
        "mlp prior one-step",
    }
    assert {r.dataset for r in report.results} == {"heldout", "pydoc"}
    # k above d_model is dropped; identity reconstruction is exact.
    assert {r.setting["k"] for r in report.results if r.method == "PCA"} == {4, 16}
    identity = [
        r for r in report.results if r.method == "identity" and r.condition == "reconstruct"
    ]
    assert all(r.delta_lm.mean == 0.0 for r in identity)
    assert report.loss_histories["mlp prior"]["train_loss"][-1] == pytest.approx(1.6)
    assert report.frechet["floor"]["n"] == 100
    assert set(report.targets) >= {
        "a_restoration_heldout",
        "b_reconstruction_vs_sae",
        "b_equal_distortion",
        "c_frechet",
    }
