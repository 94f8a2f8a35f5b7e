import torch

from tests.evaluate.helpers import small_eval_settings
from tl_diffusion_prior.evaluate.baselines.base import load_baseline
from tl_diffusion_prior.evaluate.plan import fit_baselines


def test_baselines_can_be_reused(tmp_path):
    rows = torch.randn(200, 64)
    baselines = fit_baselines(rows, small_eval_settings())
    baselines.save(tmp_path / "baselines")
    names = sorted(p.name for p in (tmp_path / "baselines").iterdir())
    assert names == ["gaussian", "sae_d128_k4"]
    assert load_baseline(tmp_path / "baselines" / "gaussian").config.kind == "gaussian"
