import pytest
import torch

from tests.lens_kinds import hooked_only
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


def test_keyed_tracking_hooks_block_zero_until_the_last_keyed_release(tiny_model):
    a = PositionTracker.acquire(tiny_model, 1, keyed=True)
    b = PositionTracker.acquire(tiny_model, 1)
    assert a is b
    assert [len(block._forward_pre_hooks) for block in tiny_model.blocks] == [1, 1]
    tokens = torch.randint(3, 300, (2, 5), generator=torch.Generator().manual_seed(0))
    tiny_model(tokens)
    keys = a.call_positions(1, 2, 5).keys
    assert keys is not None and keys.shape == (2, 5) and keys.dtype == torch.int64
    a.release(1, keyed=True)
    assert [len(block._forward_pre_hooks) for block in tiny_model.blocks] == [0, 1]
    tiny_model(tokens)
    assert a.call_positions(1, 2, 5).keys is None  # plain steering needs no keys
    a.release(1)
    assert [len(block._forward_pre_hooks) for block in tiny_model.blocks] == [0, 0]


@hooked_only
def test_a_pass_that_skips_block_zero_has_no_stale_keys(tiny_model):
    tracker = PositionTracker.acquire(tiny_model, 1, keyed=True)
    try:
        tokens = torch.randint(3, 300, (2, 5), generator=torch.Generator().manual_seed(0))
        resid = tiny_model(tokens, stop_at_layer=1)
        tiny_model(tokens)
        assert tracker.call_positions(1, 2, 5).keys is not None
        tiny_model(resid, start_at_layer=1)
        assert tracker.call_positions(1, 2, 5).keys is None
    finally:
        tracker.release(1, keyed=True)


@hooked_only
def test_keys_carry_across_cached_passes_and_match_one_full_pass(tiny_model):
    from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache

    tracker = PositionTracker.acquire(tiny_model, 1, keyed=True)
    try:
        tokens = torch.randint(3, 300, (2, 6), generator=torch.Generator().manual_seed(0))
        tiny_model(tokens)
        full = tracker.call_positions(1, 2, 6).keys
        kv = TransformerLensKeyValueCache.init_cache(tiny_model.cfg, tiny_model.cfg.device, 2)
        ones = torch.ones(2, 6, dtype=torch.long)
        tiny_model(tokens[:, :4], attention_mask=ones[:, :4], past_kv_cache=kv)
        assert torch.equal(tracker.call_positions(1, 2, 4).keys, full[:, :4])
        for pos in (4, 5):
            tiny_model(tokens[:, pos : pos + 1], attention_mask=ones[:, :1], past_kv_cache=kv)
            assert torch.equal(tracker.call_positions(1, 2, 1).keys, full[:, pos : pos + 1])
    finally:
        tracker.release(1, keyed=True)
