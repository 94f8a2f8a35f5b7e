import pytest
import torch

from tl_diffusion_prior.steering.noise import PositionNoise, position_noise


def test_values_depend_only_on_seed_row_and_position():
    noise = PositionNoise(7, 48)
    rows, positions = torch.tensor([0, 1, 1, 3]), torch.tensor([5, 5, 9, 0])
    batch = noise(rows, positions)
    for i in range(4):
        single = noise(rows[i : i + 1], positions[i : i + 1])
        assert torch.equal(single[0], batch[i])
    assert torch.equal(batch, position_noise(7, rows, positions, 48))
    assert not torch.equal(batch, PositionNoise(8, 48)(rows, positions))
    assert len({tuple(v[:3].tolist()) for v in batch}) == 4


def test_standard_normal_statistics_and_independence():
    n = 4000
    z = PositionNoise(123, 64)(torch.arange(n) % 5, torch.arange(n) // 5)
    assert z.dtype == torch.float32 and z.shape == (n, 64)
    assert abs(z.mean()) < 0.01
    assert abs(z.std() - 1) < 0.01
    assert abs(z.pow(4).mean() - 3) < 0.1  # Gaussian kurtosis
    corr = torch.corrcoef(z.T) - torch.eye(64)
    assert corr.abs().max() < 0.08  # ~5 standard errors at n = 4000
    # Neighbouring positions of one row are uncorrelated too.
    row0 = z[torch.arange(n) % 5 == 0]
    assert (row0[1:] * row0[:-1]).sum(-1).div(64).abs().mean() < 0.15


def test_odd_width_and_validation():
    z = PositionNoise(0, 5)(torch.tensor([0]), torch.tensor([1]))
    assert z.shape == (1, 5)
    with pytest.raises(ValueError, match="seed"):
        PositionNoise(-1, 5)
    # Under pytest the jaxtyping annotation catches it first (a TypeError).
    with pytest.raises((ValueError, TypeError), match="equally long|positions"):
        PositionNoise(0, 5)(torch.tensor([0, 1]), torch.tensor([1]))
