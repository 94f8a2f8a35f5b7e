import pytest
import torch

from tests.training.helpers import CountingTokenSource
from tl_diffusion_prior.capture.buffer import ActivationRingBuffer
from tl_diffusion_prior.capture.capture import ActivationCapture, CaptureConfig, fill_buffer
from tl_diffusion_prior.capture.refill import make_refill
from tl_diffusion_prior.training.state_dicts import join_state, split_state

HOOK = "blocks.0.hook_resid_post"


def _setup(model, capacity=40):
    buffer = ActivationRingBuffer(capacity, model.cfg.d_model, [HOOK])
    source = CountingTokenSource(batch_size=2, ctx=8)
    capture = ActivationCapture(model, [HOOK], buffer, CaptureConfig())
    fill_buffer(model, source, [HOOK], capacity, buffer=buffer, capture=capture, progress=False)
    return buffer, source, make_refill(model, source, [HOOK], buffer, capture=capture)


def test_refill_pushes_fresh_rows_into_the_same_buffer(tiny_model):
    buffer, source, refill = _setup(tiny_model)
    before, position = buffer.num_pushed, source.position
    old = buffer.data.clone()
    pushed = refill(10)
    assert pushed >= 10 and buffer.num_pushed == before + pushed
    assert source.position > position and refill.n_refills == 1
    assert not torch.equal(buffer.data, old)


def test_refill_state_restores_position_and_outlier_statistics(tiny_model):
    buffer, source, refill = _setup(tiny_model)
    refill(10)
    tensors, rest = split_state(refill.state_dict(), "refill/")
    assert rest["token_source"] == {"position": source.position, "seed": 0}
    assert "refill/outlier_histogram" in tensors
    saved_buffer = {k: v.clone() for k, v in buffer.state_dict().items()}
    saved = join_state({k: v.clone() for k, v in tensors.items()}, rest, "refill/")
    expected_pushed = refill(10)
    expected = buffer.data.clone()

    buffer.load_state_dict(saved_buffer)
    refill(30)  # move elsewhere, then restore
    buffer.load_state_dict(saved_buffer)
    refill.load_state_dict(saved)
    assert refill(10) == expected_pushed
    assert torch.equal(buffer.data, expected)


def test_make_refill_needs_a_resumable_source(tiny_model):
    buffer = ActivationRingBuffer(8, tiny_model.cfg.d_model, [HOOK])
    with pytest.raises(TypeError, match="state_dict"):
        make_refill(tiny_model, [torch.zeros(1, 4, dtype=torch.long)], [HOOK], buffer)
    other = ActivationRingBuffer(8, tiny_model.cfg.d_model, [HOOK])
    capture = ActivationCapture(tiny_model, [HOOK], other)
    with pytest.raises(ValueError, match="another buffer"):
        make_refill(tiny_model, CountingTokenSource(), [HOOK], buffer, capture=capture)
