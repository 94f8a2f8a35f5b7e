import pytest
import torch

from tl_diffusion_prior.core.moments import CovarianceSums, RunningMoments, covariance


def test_masked_update_ignores_rejected_rows_even_if_nonfinite():
    moments = RunningMoments((2,))
    rows = torch.tensor([[1.0, 2.0], [float("nan"), 1e30], [3.0, 4.0]])
    moments.update(rows, torch.tensor([True, False, True]))
    torch.testing.assert_close(moments.mean, torch.tensor([2.0, 3.0], dtype=torch.float64))
    torch.testing.assert_close(moments.var(), torch.tensor([1.0, 1.0], dtype=torch.float64))


def test_merge_equals_single_pass():
    a, b = torch.randn(50, 3) * 3 + 1, torch.randn(20, 3) - 4
    left, right, both = RunningMoments((3,)), RunningMoments((3,)), RunningMoments((3,))
    left.update(a)
    right.update(b)
    both.update(torch.cat([a, b]))
    left.merge(right)
    torch.testing.assert_close(left.mean, both.mean)
    torch.testing.assert_close(left.var(), both.var())


def test_empty_update_changes_nothing():
    moments = RunningMoments((2,))
    moments.update(torch.randn(4, 2))
    before = moments.mean.clone(), moments.var().clone()
    moments.update(torch.randn(3, 2), torch.zeros(3, dtype=torch.bool))
    torch.testing.assert_close(moments.mean, before[0])
    torch.testing.assert_close(moments.var(), before[1])


def _offset_rows(n: int = 3000, d: int = 6) -> torch.Tensor:
    """Correlated rows whose mean (~1e4) dwarfs their spread (~1): the case the shift is for."""
    generator = torch.Generator().manual_seed(0)
    mixing = torch.randn(d, d, generator=generator, dtype=torch.float64)
    offset = 1e4 * (1 + torch.rand(d, generator=generator, dtype=torch.float64))
    return torch.randn(n, d, generator=generator, dtype=torch.float64) @ mixing + offset


@pytest.mark.parametrize("correction", [0, 1])
@pytest.mark.parametrize("chunk", [7, 1000, 5000])
def test_covariance_matches_torch_cov_despite_a_large_mean(correction, chunk):
    x = _offset_rows()
    mean, cov = covariance(x.float(), chunk=chunk, correction=correction)
    reference = torch.cov(x.float().double().T, correction=correction)
    assert mean.dtype == cov.dtype == torch.float64
    torch.testing.assert_close(mean, x.float().double().mean(0), rtol=1e-12, atol=0)
    torch.testing.assert_close(cov, reference, rtol=1e-9, atol=1e-9)
    assert torch.equal(cov, cov.T)


def test_covariance_about_zero_would_lose_the_digits_the_shift_keeps():
    # Float64 E[x x^T] - mu mu^T at this offset (1e8 squared) cancels ~16 digits: a test that the
    # kernel really shifts, since the unshifted formula misses torch.cov by far more.
    x = _offset_rows() - 1e4 + 1e8
    reference = torch.cov(x.T, correction=0)
    _, cov = covariance(x, chunk=500)
    naive = x.T @ x / x.shape[0] - torch.outer(x.mean(0), x.mean(0))
    assert (naive - reference).abs().max() > 1e-3
    torch.testing.assert_close(cov, reference, rtol=1e-9, atol=1e-9)


def test_covariance_normalizes_each_chunk_and_accumulates_on_the_requested_device():
    x = _offset_rows(n=50).float()
    seen = []

    def normalize(rows):
        seen.append(rows.shape[0])
        return (rows - 1e4) / 2

    mean, cov = covariance(x, normalize, chunk=20, device=None)
    assert seen == [20, 20, 10] and mean.device == x.device
    reference_mean, reference_cov = covariance((x - 1e4) / 2)
    torch.testing.assert_close(mean, reference_mean)
    torch.testing.assert_close(cov, reference_cov)


def test_covariance_sums_add_up_batches_and_check_the_row_count():
    x = _offset_rows(n=40)
    whole = CovarianceSums(6, shift=torch.zeros(6))
    whole.update(x)
    parts = CovarianceSums(6, shift=torch.zeros(6))
    parts.update(x[:0])
    parts.update(x[:15])
    parts.update(x[15:])
    parts.all_reduce()  # no process group: a no-op
    assert parts.n == 40
    for a, b in zip(whole.mean_cov(), parts.mean_cov(), strict=True):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="correction=1 needs more than 1 rows, got 1"):
        covariance(x[:1], correction=1)
    with pytest.raises(ValueError, match="got 0"):
        CovarianceSums(6).mean_cov()
