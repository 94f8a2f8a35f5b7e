import pytest
import torch

from tl_diffusion_prior.steering.positions import CallPositions, PositionTracker, tracker_for


def _call(offset, n_new, prompt_length, mask=None, batch=2):
    return CallPositions(
        batch=batch, n_new=n_new, offset=offset, prompt_length=prompt_length, attention_mask=mask
    )


def test_without_mask_only_position_zero_is_skipped():
    call = _call(0, 5, 3)
    cpu = torch.device("cpu")
    assert call.steer_mask("all", cpu).tolist() == [[False, True, True, True, True]] * 2
    assert call.steer_mask("prompt", cpu).tolist() == [[False, True, True, False, False]] * 2
    assert call.steer_mask("generated", cpu).tolist() == [[False, False, False, True, True]] * 2


def test_left_padding_and_first_real_position_under_the_cache():
    mask = torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1]])
    prefill = _call(0, 3, 3, mask[:, :3])
    assert prefill.steer_mask("all", torch.device("cpu")).tolist() == [
        [False, True, True],
        [False, False, False],
    ]
    step = _call(3, 1, 3, mask)  # full-length mask, one new position
    assert step.steer_mask("all", torch.device("cpu")).tolist() == [[True], [True]]
    assert step.steer_mask("prompt", torch.device("cpu")).tolist() == [[False], [False]]


def test_short_mask_is_aligned_to_the_newest_positions():
    call = _call(4, 2, 4, torch.tensor([[1, 1], [0, 1]]))
    assert call.steer_mask("all", torch.device("cpu")).tolist() == [[True, True], [False, True]]


def test_tracker_is_shared_reference_counted_and_removed(tiny_model):
    a = PositionTracker.acquire(tiny_model, 0)
    b = PositionTracker.acquire(tiny_model, 1)
    c = PositionTracker.acquire(tiny_model, 0)
    assert a is b is c is tracker_for(tiny_model)
    assert [len(block._forward_pre_hooks) for block in tiny_model.blocks] == [1, 1]
    a.release(0)
    assert len(tiny_model.blocks[0]._forward_pre_hooks) == 1
    a.release(0)
    a.release(1)
    assert [len(block._forward_pre_hooks) for block in tiny_model.blocks] == [0, 0]
    assert tracker_for(tiny_model) is None
    assert not {"generate", "generate_stream"} & set(tiny_model.__dict__)


def test_hook_outside_a_block_call_is_reported(tiny_model):
    tracker = PositionTracker.acquire(tiny_model, 0)
    try:
        with pytest.raises(RuntimeError, match="outside a forward pass"):
            tracker.call_positions(0, 2, 3)
    finally:
        tracker.release(0)
