import pytest
import torch

from tl_diffusion_prior.steering.noise import PositionNoise, position_noise, prefix_keys


def test_values_depend_only_on_seed_key_and_position():
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


def _keys(x, real=None, carry=None):
    batch, length = x.shape[:2]
    real = torch.ones(batch, length, dtype=torch.bool) if real is None else real
    first = real.to(torch.uint8).argmax(dim=1, keepdim=True)
    return prefix_keys(x, real, torch.arange(length)[None, :] - first, carry)


def test_prefix_keys_are_causal_padding_invariant_and_extend_across_passes():
    x = torch.randn(2, 6, 8, generator=torch.Generator().manual_seed(0))
    keys = _keys(x)
    assert keys.dtype == torch.int64 and keys.shape == (2, 6)
    assert bool(((keys >= 0) & (keys < 2**32)).all())
    # Each key depends on the content up to its position only.
    changed = x.clone()
    changed[0, 3] += 1.0
    new = _keys(changed)
    assert torch.equal(new[0, :3], keys[0, :3]) and not (new[0, 3:] == keys[0, 3:]).any()
    assert torch.equal(new[1], keys[1])
    # Order matters: swapping two positions changes the key from there on.
    swapped = x[:, [1, 0, 2, 3, 4, 5]]
    assert not (_keys(swapped)[:, 1:] == keys[:, 1:]).any()
    # Left padding adds nothing, whatever the padded activations hold.
    padded = torch.cat([torch.randn(2, 3, 8), x], dim=1)
    real = torch.ones(2, 9, dtype=torch.bool)
    real[:, :3] = False
    assert torch.equal(_keys(padded, real)[:, 3:], keys)
    # A pass that carries the previous pass's last key continues the same sequence.
    assert torch.equal(_keys(x[:, :4]), keys[:, :4])
    tail = prefix_keys(
        x[:, 4:], torch.ones(2, 2, dtype=torch.bool), torch.arange(4, 6).expand(2, 2), keys[:, 3]
    )
    assert torch.equal(tail, keys[:, 4:])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_prefix_keys_read_the_exact_bits_of_every_dtype(dtype):
    x = torch.randn(1, 4, 8, generator=torch.Generator().manual_seed(1)).to(dtype)
    keys = _keys(x)
    assert torch.equal(keys, _keys(x.clone()))
    flipped = x.clone()
    flipped[0, 2, 5] = -flipped[0, 2, 5]  # only the sign bit differs
    assert torch.equal(_keys(flipped)[0, :2], keys[0, :2])
    assert not (_keys(flipped)[0, 2:] == keys[0, 2:]).any()
