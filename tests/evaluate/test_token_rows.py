import pytest
import torch

from tests.lens_kinds import tiny_tokenizer
from tl_diffusion_prior.evaluate.token_rows import capture_token_rows, tokenize_documents

HOOK = "blocks.0.hook_resid_post"


def test_tokenize_keeps_spans_and_drops_short_texts():
    docs = tokenize_documents(
        tiny_tokenizer(),
        ["hello world", "hi", "abcdefghijkl"],
        max_tokens=5,
        min_tokens=3,
        sources=["a", "b", "c"],
    )
    assert docs.texts == ["hello world", "abcdefghijkl"] and docs.sources == ["a", "c"]
    assert [len(ids) for ids in docs.token_ids] == [5, 5]
    assert docs.spans[0] == [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)]
    with pytest.raises(ValueError, match="min_tokens"):
        tokenize_documents(tiny_tokenizer(), ["a"], max_tokens=4, min_tokens=3)


def test_rows_come_back_in_document_order_and_match_a_direct_forward(tiny_model):
    tokenizer = tiny_tokenizer()
    if getattr(tiny_model, "tokenizer", None) is None:
        tiny_model.set_tokenizer(tokenizer)
    texts = ["the cat sat", "a much longer document here", "dogs bark", "short one!"]
    docs = tokenize_documents(tokenizer, texts, max_tokens=12, min_tokens=3)
    rows = capture_token_rows(tiny_model, HOOK, docs, batch_size=2)
    lengths = [len(ids) for ids in docs.token_ids]
    assert len(rows) == sum(lengths)
    assert rows.doc_ids.tolist() == [d for d, n in enumerate(lengths) for _ in range(n)]
    assert rows.positions.tolist() == [p for n in lengths for p in range(1, n + 1)]
    bos = tokenizer.bos_token_id
    start = 0
    for ids in docs.token_ids:
        tokens = torch.tensor([[bos, *ids]])
        with torch.inference_mode():
            _, cache = tiny_model.run_with_cache(tokens, names_filter=[HOOK])
        expected = cache[HOOK][0, 1:].float()
        assert torch.allclose(rows.activations[start : start + len(ids)], expected, atol=1e-5)
        assert rows.token_ids[start : start + len(ids)].tolist() == ids
        start += len(ids)
