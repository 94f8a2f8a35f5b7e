import torch

from tl_diffusion_prior.core.moments import RunningMoments


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
