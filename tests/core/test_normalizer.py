import pytest
import torch
from torch import nn

from tl_diffusion_prior.core.normalizer import Float32BuffersMixin, Normalizer


def fitted(d=8, eps=1e-5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    mean = torch.randn(d, generator=gen, dtype=torch.float64) * 3
    var = torch.rand(d, generator=gen, dtype=torch.float64) * 4 + 0.1
    norm = Normalizer(d, eps=eps)
    norm.set_stats(mean, var)
    return norm, mean, var


def test_fresh_normalizer_is_identity():
    norm = Normalizer(5)
    x = torch.randn(3, 5)
    assert not norm.is_fitted
    torch.testing.assert_close(norm.normalize(x), x, rtol=0, atol=0)
    torch.testing.assert_close(norm.denormalize(x), x, rtol=0, atol=0)


def test_set_stats_gives_zscore_with_eps():
    norm, mean, var = fitted(eps=1e-3)
    assert norm.is_fitted
    assert norm.mean.dtype == norm.std.dtype == torch.float32
    torch.testing.assert_close(norm.std, torch.sqrt(var + 1e-3).float())
    x = torch.randn(10, 8, dtype=torch.float64) * var.sqrt() + mean
    expected = (x - mean) / torch.sqrt(var + 1e-3)
    torch.testing.assert_close(norm.normalize(x), expected, rtol=1e-5, atol=1e-5)


def test_zero_variance_dim_stays_finite():
    norm = Normalizer(3, eps=1e-4)
    norm.set_stats(torch.zeros(3), torch.tensor([1.0, 0.0, 2.0]))
    z = norm.normalize(torch.ones(4, 3))
    assert torch.isfinite(z).all()
    torch.testing.assert_close(z[:, 1], torch.full((4,), 1 / 1e-2))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_round_trip_and_dtype(dtype):
    norm, mean, var = fitted()
    x = (torch.randn(2, 6, 8) * 2 + 1).to(dtype)
    z = norm.normalize(x)
    assert z.dtype == dtype and z.shape == x.shape
    back = norm.denormalize(z)
    assert back.dtype == dtype
    tol = 5e-2 if dtype == torch.bfloat16 else 1e-5
    torch.testing.assert_close(back.float(), x.float(), rtol=tol, atol=tol)


def test_module_cast_keeps_float32_stats():
    norm, mean, _ = fitted()
    norm.to(torch.bfloat16)
    assert norm.mean.dtype == torch.float32 and norm.std.dtype == torch.float32
    assert norm.fitted.dtype == torch.bool
    torch.testing.assert_close(norm.mean, mean.float())
    norm.double()
    assert norm.mean.dtype == torch.float32


def test_state_dict_round_trip():
    norm, _, _ = fitted()
    assert set(norm.state_dict()) == {"mean", "std", "fitted"}
    other = Normalizer(8)
    other.load_state_dict(norm.state_dict())
    assert other.is_fitted
    x = torch.randn(4, 8)
    torch.testing.assert_close(other.normalize(x), norm.normalize(x), rtol=0, atol=0)


def test_rejects_bad_stats():
    norm = Normalizer(4)
    with pytest.raises(ValueError, match="shape"):
        norm.set_stats(torch.zeros(5), torch.ones(5))
    with pytest.raises(ValueError, match="non-negative"):
        norm.set_stats(torch.zeros(4), torch.tensor([1.0, -0.5, 1.0, 1.0]))
    with pytest.raises(ValueError, match="NaN"):
        norm.set_stats(torch.tensor([0.0, float("nan"), 0.0, 0.0]), torch.ones(4))
    with pytest.raises(TypeError):
        norm.set_stats(torch.zeros(4, dtype=torch.int64), torch.ones(4))
    assert not norm.is_fitted


def test_rejects_bad_construction_and_inputs():
    with pytest.raises(ValueError, match="d_model"):
        Normalizer(0)
    with pytest.raises(ValueError, match="eps"):
        Normalizer(4, eps=0.0)
    with pytest.raises(ValueError, match="d_model=4"):
        Normalizer(4).normalize(torch.zeros(2, 5))


def test_float32_buffers_mixin_keeps_own_buffers_but_casts_submodules():
    class Stats(Float32BuffersMixin):
        def __init__(self):
            super().__init__()
            self.register_buffer("mean", torch.full((3,), 1.0 + 2.0**-12))
            self.register_buffer("steps", torch.arange(3))
            self.linear = nn.Linear(3, 3)

    module = Stats()
    assert module.half() is module
    assert module.mean.dtype == torch.float32 and module.mean[0].item() == 1.0 + 2.0**-12
    assert module.steps.dtype == torch.int64
    assert module.linear.weight.dtype == torch.float16
    module.to("meta", torch.bfloat16)
    assert module.mean.device.type == "meta" and module.mean.dtype == torch.float32
