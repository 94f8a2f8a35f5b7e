import torch

from tests.evaluate.helpers import small_eval_settings
from tests.priors.helpers import build_tiny_prior
from tl_diffusion_prior.evaluate.baselines.base import load_baseline
from tl_diffusion_prior.evaluate.plan import build_plan, fit_baselines


def test_baselines_can_be_reused(tmp_path):
    rows = torch.randn(200, 64)
    baselines = fit_baselines(rows, small_eval_settings())
    baselines.save(tmp_path / "baselines")
    names = sorted(p.name for p in (tmp_path / "baselines").iterdir())
    assert names == ["gaussian", "sae_d128_k4"]
    assert load_baseline(tmp_path / "baselines" / "gaussian").config.kind == "gaussian"


def test_restoration_runs_both_protocols_and_names_the_wiener_filter():
    rows = torch.randn(200, 64)
    baselines = fit_baselines(rows, small_eval_settings())
    prior = build_tiny_prior("mlp", d_model=64)
    plan = build_plan(small_eval_settings(), baselines, [prior], ["MLP prior"], None, 1.0)
    noise = [methods for condition, methods in plan if condition.kind == "noise"]
    assert noise
    for methods in noise:
        names = {m.name for m in methods}
        assert {"identity", "Wiener filter", "MLP prior", "MLP prior round trip"} <= names
        assert "Gaussian posterior mean" not in names
    reconstruct = next(methods for condition, methods in plan if condition.kind == "reconstruct")
    assert not any("round trip" in m.name or m.name == "Wiener filter" for m in reconstruct)
