import pytest
import torch

from tests.lens_kinds import hooked_only
from tl_diffusion_prior.capture.buffer import ActivationRingBuffer
from tl_diffusion_prior.capture.capture import ActivationCapture, CaptureConfig, fill_buffer

HOOK = "blocks.1.hook_resid_post"


def _tokens(batch=3, ctx=10, seed=0):
    return torch.randint(2, 300, (batch, ctx), generator=torch.Generator().manual_seed(seed))


def test_captured_values_equal_run_with_cache(tiny_model):
    tokens = _tokens()
    buffer = fill_buffer(
        tiny_model,
        tokens,
        HOOK,
        n_activations=tokens.shape[0] * (tokens.shape[1] - 1),
        config=CaptureConfig(outlier_multiple=None),
        progress=False,
    )
    _, cache = tiny_model.run_with_cache(tokens, names_filter=[HOOK])
    expected = cache[HOOK][:, 1:].reshape(-1, tiny_model.cfg.d_model)
    assert buffer.num_pushed == expected.shape[0]
    torch.testing.assert_close(buffer.filled_rows(HOOK), expected, rtol=0, atol=0)


def test_multiple_hooks_fill_aligned_rows(tiny_model):
    hooks = ["blocks.0.hook_resid_mid", "blocks.1.hook_resid_pre", "blocks.0.hook_resid_pre"]
    tokens = _tokens(2, 6)
    buffer = fill_buffer(
        tiny_model, tokens, hooks, 10, config=CaptureConfig(outlier_multiple=None), progress=False
    )
    _, cache = tiny_model.run_with_cache(tokens, names_filter=hooks)
    for name in hooks:
        expected = cache[name][:, 1:].reshape(-1, 64)
        torch.testing.assert_close(buffer.filled_rows(name), expected, rtol=0, atol=0)


@hooked_only
def test_excluded_positions_never_appear(tiny_model):
    tokens = _tokens(4, 12, seed=3)
    tokens[:, 0] = 1  # BOS
    tokens[1, 5] = 7  # a listed token id
    tokens[2, 3] = 1  # BOS mid-sequence
    attention_mask = torch.ones_like(tokens)
    attention_mask[3, :4] = 0  # left padding in row 3
    tiny_model.tokenizer = type("Tok", (), {"bos_token_id": 1, "padding_side": "right"})()
    try:
        buffer = ActivationRingBuffer(100, 64, [HOOK])
        capture = ActivationCapture(
            tiny_model, HOOK, buffer, CaptureConfig(exclude_token_ids=(7,), outlier_multiple=None)
        )
        with torch.inference_mode(), capture.attach():
            tiny_model(tokens, attention_mask=attention_mask)
    finally:
        tiny_model.tokenizer = None
    _, cache = tiny_model.run_with_cache(tokens, names_filter=[HOOK], attention_mask=attention_mask)
    keep = torch.ones_like(tokens, dtype=torch.bool)
    keep[:, 0] = False
    keep[1, 5] = keep[2, 3] = False
    keep[3, :5] = False  # pads and the first real token after them
    expected = cache[HOOK][keep]
    torch.testing.assert_close(buffer.filled_rows(HOOK), expected, rtol=0, atol=0)
    assert capture.stats().excluded_positions == tokens.numel() - keep.sum().item()


def test_position_zero_is_excluded_even_with_string_input(tiny_model):
    buffer = ActivationRingBuffer(50, 64, [HOOK])
    with torch.inference_mode(), ActivationCapture(tiny_model, HOOK, buffer).attach():
        tiny_model(torch.tensor([[5, 6, 7]]))
    assert buffer.num_pushed == 2


def test_outlier_filter_drops_massive_rows_and_counts_them(tiny_model):
    tokens = _tokens(8, 16)
    boost = 1000.0

    def make_massive(act, hook):
        act = act.clone()
        act[0, 1] *= boost
        return act

    buffer = ActivationRingBuffer(500, 64, [HOOK])
    capture = ActivationCapture(tiny_model, HOOK, buffer)
    with torch.inference_mode(), tiny_model.hooks(fwd_hooks=[(HOOK, make_massive)]):
        with capture.attach():
            tiny_model(tokens)
    assert capture.stats().dropped_outliers == 1
    assert buffer.num_pushed == 8 * 15 - 1
    assert (
        buffer.filled_rows(HOOK).norm(dim=-1).max()
        < 100 * buffer.filled_rows(HOOK).norm(dim=-1).median()
    )


def test_unknown_hook_lists_valid_names(tiny_model):
    with pytest.raises(ValueError, match=r"Did you mean.*blocks\.1\.hook_resid_post"):
        fill_buffer(tiny_model, _tokens(), "blocks.1.hook_resid_posts", 5, progress=False)


def test_no_hook_survives_an_exception(tiny_model):
    buffer = ActivationRingBuffer(50, 64, [HOOK])
    capture = ActivationCapture(tiny_model, HOOK, buffer)
    with pytest.raises(RuntimeError, match="boom"):
        with capture.attach():
            tiny_model(_tokens())
            raise RuntimeError("boom")
    assert all(not hp.fwd_hooks for hp in tiny_model.hook_dict.values())
    assert not tiny_model._forward_pre_hooks
    pushed = buffer.num_pushed
    tiny_model(_tokens())
    assert buffer.num_pushed == pushed


def test_hooks_are_removed_when_the_forward_itself_fails(tiny_model):
    buffer = ActivationRingBuffer(50, 64, [HOOK])

    def broken_mlp(*args, **kwargs):
        raise RuntimeError("mlp failed")

    # Out-of-vocabulary ids no longer reach the model (they are refused first), so break a block.
    handle = tiny_model.blocks[1].mlp.register_forward_pre_hook(broken_mlp)
    try:
        with pytest.raises(RuntimeError, match="mlp failed"):
            fill_buffer(tiny_model, _tokens(2, 5), HOOK, 5, buffer=buffer, progress=False)
    finally:
        handle.remove()
    assert all(not hp.fwd_hooks for hp in tiny_model.hook_dict.values())
    assert not tiny_model._forward_pre_hooks


def test_fill_buffer_accepts_an_iterable_and_stops_at_the_target(tiny_model):
    batches = [_tokens(2, 8, seed=s) for s in range(10)]
    calls = []

    def source():
        for b in batches:
            calls.append(1)
            yield b

    buffer = ActivationRingBuffer(100, 64, [HOOK])
    fill_buffer(tiny_model, source(), HOOK, 30, buffer=buffer, progress=False)
    assert buffer.num_pushed >= 30
    assert len(calls) == 3  # 14 rows per batch


def test_fill_buffer_errors(tiny_model):
    with pytest.raises(ValueError, match="integer tokens"):
        fill_buffer(tiny_model, torch.randn(2, 4), HOOK, 5, progress=False)
    with pytest.raises(ValueError, match="no capturable tokens"):
        fill_buffer(tiny_model, [torch.zeros(2, 1, dtype=torch.long)], HOOK, 5, progress=False)
    buffer = ActivationRingBuffer(10, 64, ["blocks.0.hook_resid_post"])
    with pytest.raises(ValueError, match="buffer holds hooks"):
        ActivationCapture(tiny_model, HOOK, buffer)


@hooked_only
def test_capture_works_on_a_generic_hooked_root_module():
    from transformer_lens.hook_points import HookedRootModule, HookPoint

    class TwoLayer(HookedRootModule):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(20, 8)
            self.hook_mid = HookPoint()
            self.setup()

        def forward(self, tokens):
            return self.hook_mid(self.embed(tokens) * 2)

    model = TwoLayer()
    tokens = torch.randint(0, 20, (3, 5))
    with pytest.raises(ValueError, match="pass buffer="):
        fill_buffer(model, tokens, "hook_mid", 12, progress=False)
    buffer = ActivationRingBuffer(12, 8, ["hook_mid"])
    fill_buffer(model, tokens, "hook_mid", 12, buffer=buffer, progress=False)
    torch.testing.assert_close(
        buffer.filled_rows(0), (model.embed(tokens) * 2)[:, 1:].reshape(-1, 8).detach()
    )


@pytest.mark.slow
def test_real_model_position_zero_and_outliers_never_reach_the_buffer(default_model):
    from tl_diffusion_prior.constants import DEFAULT_HOOK

    text = ["The quick brown fox jumps over the lazy dog. " * 6, "To be, or not to be. " * 8]
    tokens = default_model.to_tokens(text, padding_side="right")[:, :40]
    _, cache = default_model.run_with_cache(tokens, names_filter=[DEFAULT_HOOK], stop_at_layer=16)
    norms = cache[DEFAULT_HOOK].norm(dim=-1)
    assert norms[:, 0].min() > 20 * norms[:, 1:].median()
    buffer = fill_buffer(default_model, tokens, DEFAULT_HOOK, 10_000, progress=False)
    kept = buffer.filled_rows(DEFAULT_HOOK).norm(dim=-1)
    assert kept.max() < 5.2 * norms[:, 1:].median()
    assert buffer.var(DEFAULT_HOOK).sqrt().max() < 10 * buffer.var(DEFAULT_HOOK).sqrt().median()
