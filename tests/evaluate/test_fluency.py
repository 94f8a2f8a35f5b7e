import pytest
import torch

from tl_diffusion_prior.evaluate.fluency import (
    _check_inputs,
    concept_logprob,
    concept_token_ids,
    continuation_nll,
    mask_after_eos,
    score_continuations,
)
from tl_diffusion_prior.steering.steer import steer


def _tokens(batch, ctx, seed):
    return torch.randint(3, 300, (batch, ctx), generator=torch.Generator().manual_seed(seed))


def _log_probs(model, prompt, continuation):
    logits = model(torch.cat([prompt, continuation], dim=1))
    return torch.log_softmax(logits, dim=-1)


def test_nll_matches_a_direct_computation(tiny_model):
    prompt, cont = _tokens(2, 4, 0), _tokens(2, 5, 1)
    log_probs = _log_probs(tiny_model, prompt, cont)
    expected = -torch.stack(
        [torch.stack([log_probs[b, 3 + t, cont[b, t]] for t in range(5)]).mean() for b in range(2)]
    )
    torch.testing.assert_close(continuation_nll(tiny_model, prompt, cont), expected)


def test_continuation_padding_is_excluded(tiny_model):
    prompt, cont = _tokens(2, 4, 2), _tokens(2, 5, 3)
    counted = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    masked = continuation_nll(tiny_model, prompt, cont, continuation_mask=counted)
    # Row 0 scored on its first three tokens only equals scoring the truncated continuation.
    short = continuation_nll(tiny_model, prompt[:1], cont[:1, :3])
    torch.testing.assert_close(masked[0], short[0])
    torch.testing.assert_close(masked[1], continuation_nll(tiny_model, prompt, cont)[1])


def test_left_padded_prompt_with_mask_matches_unpadded(tiny_model):
    prompt, cont = _tokens(1, 4, 4), _tokens(1, 3, 5)
    padded = torch.cat([torch.zeros(1, 2, dtype=torch.long), prompt], dim=1)
    mask = torch.tensor([[0, 0, 1, 1, 1, 1]])
    unpadded = continuation_nll(tiny_model, prompt, cont)
    with_mask = continuation_nll(tiny_model, padded, cont, prompt_attention_mask=mask)
    torch.testing.assert_close(with_mask, unpadded, rtol=1e-4, atol=1e-4)


def test_scores_ignore_attached_steering(tiny_model):
    prompt, cont = _tokens(2, 4, 6), _tokens(2, 5, 7)
    clean = score_continuations(tiny_model, prompt, cont, concept_ids=[5, 6])
    with steer(tiny_model, "blocks.0.hook_resid_post", torch.randn(64), 20.0):
        inside = score_continuations(tiny_model, prompt, cont, concept_ids=[5, 6])
    assert torch.equal(clean.nll, inside.nll)
    assert torch.equal(clean.concept_logprob, inside.concept_logprob)


def test_concept_logprob_is_the_mean_log_mass_after_each_continuation_token(tiny_model):
    prompt, cont = _tokens(2, 4, 8), _tokens(2, 3, 9)
    ids = [7, 42, 199]
    log_probs = _log_probs(tiny_model, prompt, cont)
    expected = torch.logsumexp(log_probs[:, 4:7][..., ids], dim=-1).mean(dim=1)
    torch.testing.assert_close(concept_logprob(tiny_model, prompt, cont, ids), expected)
    scores = score_continuations(tiny_model, prompt, cont)
    assert scores.concept_logprob is None and scores.num_tokens.tolist() == [3, 3]
    with pytest.raises(ValueError, match="concept_ids"):
        concept_logprob(tiny_model, prompt, cont, [300])


def test_mask_after_eos():
    tokens = torch.tensor([[5, 2, 2, 2], [5, 6, 7, 8], [2, 9, 2, 9]])
    assert mask_after_eos(tokens, 2).tolist() == [
        [True, True, False, False],
        [True, True, True, True],
        [True, False, False, False],
    ]
    assert mask_after_eos(tokens, [7, 9])[1].tolist() == [True, True, True, False]


def test_input_validation(tiny_model):
    # Under pytest, jaxtyping rejects mismatched batch sizes first (a TypeError); without it the
    # function's own checks give these messages.
    with pytest.raises((ValueError, TypeError)):
        continuation_nll(tiny_model, _tokens(2, 3, 0), _tokens(1, 3, 0))
    with pytest.raises(ValueError, match="rows"):
        _check_inputs(_tokens(2, 3, 0), _tokens(1, 3, 0), None, None)
    with pytest.raises(ValueError, match="continuation_mask"):
        _check_inputs(_tokens(1, 3, 0), _tokens(1, 3, 0), None, torch.ones(1, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="integer"):
        _check_inputs(torch.randn(1, 3), _tokens(1, 3, 0), None, None)
    with pytest.raises(ValueError, match="tokenizer"):
        concept_token_ids(tiny_model, ["wedding"])


@pytest.mark.slow
def test_concept_words_on_the_default_model(default_model):
    ids = concept_token_ids(default_model, ["wedding", "bride"])
    tokenizer = default_model.tokenizer
    assert tokenizer.encode(" wedding", add_special_tokens=False)[0] in ids
    prompt = default_model.to_tokens("Yesterday I went to")
    on_topic = default_model.to_tokens(
        " a wedding. The bride wore white and the", prepend_bos=False
    )
    off_topic = default_model.to_tokens(
        " the tax office. The clerk filed my forms and", prepend_bos=False
    )
    width = min(on_topic.shape[1], off_topic.shape[1])
    on = concept_logprob(default_model, prompt, on_topic[:, :width], ids)
    off = concept_logprob(default_model, prompt, off_topic[:, :width], ids)
    assert on > off + 1.0
    nll = continuation_nll(default_model, prompt, on_topic)
    assert 0 < nll.item() < 8
