import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tl_diffusion_prior.capture.buffer import ActivationRingBuffer


class ReferenceRing:
    """A plain-Python ring buffer to check the device implementation against."""

    def __init__(self, capacity):
        self.capacity = capacity
        self.slots = [None] * capacity
        self.ptr = 0
        self.seen = []

    def push(self, rows, mask):
        for row, keep in zip(rows, mask, strict=True):
            if keep and np.isfinite(row).all():
                self.slots[self.ptr] = row
                self.ptr = (self.ptr + 1) % self.capacity
                self.seen.append(row)


pushes = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=13),  # rows in this push
        st.integers(min_value=0, max_value=2**31 - 1),  # seed for values and mask
    ),
    min_size=1,
    max_size=8,
)


@settings(max_examples=60, deadline=None)
@given(capacity=st.integers(1, 9), d_model=st.integers(1, 4), pushes=pushes)
def test_ring_buffer_matches_reference(capacity, d_model, pushes):
    buffer = ActivationRingBuffer(capacity, d_model)
    reference = ReferenceRing(capacity)
    for n_rows, seed in pushes:
        rng = np.random.default_rng(seed)
        rows = rng.normal(size=(n_rows, d_model)) * rng.uniform(0.1, 100)
        rows[rng.random(n_rows) < 0.15, 0] = np.nan
        rows[rng.random(n_rows) < 0.1, -1] = np.inf
        mask = rng.random(n_rows) < 0.8
        buffer.push(torch.tensor(rows, dtype=torch.float32), torch.tensor(mask))
        reference.push(rows.astype(np.float32), mask)

    assert buffer.num_pushed == len(reference.seen)
    assert buffer.num_filled == min(len(reference.seen), capacity)
    filled = [s for s in reference.slots if s is not None]
    np.testing.assert_array_equal(
        buffer.filled_rows(0).numpy(),
        np.stack(filled) if filled else np.zeros((0, d_model), np.float32),
    )
    if reference.seen:
        seen = np.stack(reference.seen).astype(np.float64)
        np.testing.assert_allclose(buffer.mean(0).numpy(), seen.mean(0), rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(buffer.var(0).numpy(), seen.var(0), rtol=1e-7, atol=1e-7)
        sample = buffer.sample(50, generator=torch.Generator().manual_seed(0), hook=0).numpy()
        stored = {tuple(r) for r in np.stack(filled)}
        assert all(tuple(r) in stored for r in sample)


def test_sample_is_uniform_over_filled_slots():
    buffer = ActivationRingBuffer(10, 1)
    buffer.push(torch.arange(4, dtype=torch.float32).unsqueeze(1))
    draws = buffer.sample(8000, generator=torch.Generator().manual_seed(1), hook=0).squeeze(1)
    counts = torch.bincount(draws.long(), minlength=10)
    assert counts[4:].sum() == 0
    assert (counts[:4] - 2000).abs().max() < 200


def test_sample_with_generator_is_reproducible():
    buffer = ActivationRingBuffer(100, 3)
    buffer.push(torch.randn(100, 3))
    a = buffer.sample(16, generator=torch.Generator().manual_seed(5))
    b = buffer.sample(16, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_statistics_cover_everything_pushed_not_only_what_is_kept():
    buffer = ActivationRingBuffer(4, 2)
    chunks = [torch.randn(3, 2) * (i + 1) + i for i in range(5)]
    for chunk in chunks:
        buffer.push(chunk)
    everything = torch.cat(chunks).double()
    torch.testing.assert_close(buffer.mean(0), everything.mean(0))
    torch.testing.assert_close(buffer.var(0), everything.var(0, unbiased=False))


def test_statistics_are_accurate_with_a_large_offset():
    buffer = ActivationRingBuffer(8, 1)
    offset = 1e6
    values = [torch.tensor([[offset + 1.0], [offset - 1.0]]) for _ in range(50)]
    for v in values:
        buffer.push(v.float())
    torch.testing.assert_close(buffer.var(0), torch.tensor([1.0], dtype=torch.float64))


def test_bfloat16_storage_and_float64_stats():
    buffer = ActivationRingBuffer(4, 3, dtype=torch.bfloat16)
    rows = torch.tensor([[1.001, 2.0, 3.0]])
    buffer.push(rows)
    assert buffer.data.dtype == torch.bfloat16
    assert buffer.mean(0).dtype == torch.float64
    assert buffer.mean(0)[0].item() == pytest.approx(1.001, abs=1e-6)


def test_nonfinite_rows_are_dropped_and_counted():
    buffer = ActivationRingBuffer(4, 2)
    buffer.push(torch.tensor([[1.0, 2.0], [float("nan"), 0.0], [0.0, float("-inf")]]))
    assert buffer.num_pushed == 1
    assert buffer.num_dropped_nonfinite == 2
    assert torch.isfinite(buffer.mean(0)).all()


def test_push_larger_than_capacity_keeps_the_latest_rows():
    buffer = ActivationRingBuffer(3, 1)
    buffer.push(torch.arange(8, dtype=torch.float32).unsqueeze(1))
    assert sorted(buffer.filled_rows(0).squeeze(1).tolist()) == [5.0, 6.0, 7.0]


@pytest.mark.parametrize(
    "rows, error, match",
    [
        (torch.randn(2, 5), ValueError, "got shape"),
        (torch.randn(2, 2, 4), ValueError, "got shape"),
        (torch.ones(2, 4, dtype=torch.long), TypeError, "floating-point"),
        ([[1.0, 2.0, 3.0, 4.0]], TypeError, "torch.Tensor"),
    ],
)
def test_bad_input_is_rejected_clearly(rows, error, match):
    buffer = ActivationRingBuffer(4, 4)
    with pytest.raises(error, match=match):
        buffer.push(rows)


def test_wrong_device_is_rejected():
    buffer = ActivationRingBuffer(4, 4, device="meta")
    with pytest.raises(ValueError, match="lives on meta"):
        buffer.push(torch.randn(2, 4))


def test_bad_construction_is_rejected():
    with pytest.raises(ValueError, match="dtype"):
        ActivationRingBuffer(4, 4, dtype=torch.float16)
    with pytest.raises(ValueError, match="capacity"):
        ActivationRingBuffer(0, 4)
    with pytest.raises(ValueError, match="unique"):
        ActivationRingBuffer(4, 4, hook_names=("a", "a"))


def test_sampling_an_empty_buffer_says_what_to_do():
    with pytest.raises(ValueError, match="fill it first"):
        ActivationRingBuffer(4, 4).sample(2)


def test_save_load_round_trip(tmp_path):
    buffer = ActivationRingBuffer(5, 3, hook_names=("blocks.0.hook_resid_post", "b"))
    buffer.push(torch.randn(7, 2, 3), torch.tensor([True, False, True, True, True, True, True]))
    buffer.push(torch.tensor([[[float("nan")] * 3] * 2]))
    path = tmp_path / "buffer.safetensors"
    buffer.save(path)
    loaded = ActivationRingBuffer.load(path)
    assert loaded.hook_names == buffer.hook_names
    assert torch.equal(loaded.data, buffer.data)
    assert loaded.num_pushed == buffer.num_pushed == 6
    assert loaded.num_dropped_nonfinite == 1 and loaded.num_masked == 1
    torch.testing.assert_close(loaded.var(), buffer.var())
    # The write pointer survives: the next push lands in the same slot in both.
    row = torch.randn(1, 2, 3)
    buffer.push(row)
    loaded.push(row)
    assert torch.equal(loaded.data, buffer.data)
    assert not list(tmp_path.glob("*.tmp"))
