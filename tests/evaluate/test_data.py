import pytest
import torch

from tl_diffusion_prior.data.corpus import Document
from tl_diffusion_prior.evaluate.data import (
    document_text,
    held_out_windows,
    packed_windows,
    texts_of,
)
from tl_diffusion_prior.evaluate.settings import EvalSettings


class CharTokenizer:
    """Character-level stand-in for a Hugging Face tokenizer (ids 3..), BOS 1, EOS 2."""

    bos_token_id, eos_token_id = 1, 2

    def __call__(self, texts, **kwargs):
        return {"input_ids": [[3 + (ord(c) % 50) for c in text] for text in texts]}


class FakeModel:
    tokenizer = CharTokenizer()


def test_documents_in_every_accepted_form():
    docs = ["a", {"text": "b"}, Document("c", "src", "title")]
    assert texts_of(docs) == ["a", "b", "c"]
    with pytest.raises(TypeError, match="Cannot read text"):
        document_text(3)


def test_packed_windows_follow_the_trainers_packing():
    texts = ["abcdefghij" * 3, "klmnop" * 4, "qrstuv" * 5]
    token_set = packed_windows(FakeModel(), texts, "toy", seq_len=8, max_windows=5)
    assert token_set.tokens.shape == (5, 8)
    assert (token_set.tokens[:, 0] == 1).all()
    assert (token_set.tokens[:, 1:] != 1).all()
    assert (token_set.tokens == 2).any()  # an EOS marks a document boundary inside a row
    assert token_set.doc_ids.equal(torch.arange(5))
    again = packed_windows(FakeModel(), texts, "toy", seq_len=8, max_windows=5)
    assert again.tokens.equal(token_set.tokens)
    with pytest.raises(ValueError, match="too little text"):
        packed_windows(FakeModel(), ["ab"], "tiny", seq_len=8, max_windows=2)


def test_held_out_windows_follow_the_settings():
    texts = ["abcdefghij" * 3, "klmnop" * 4, "qrstuv" * 5]
    ood = ["zyxwvu" * 6, "tsrqpo" * 5]
    settings = EvalSettings(seq_len=8, max_sequences=3, seed=1)
    heldout, pydoc = held_out_windows(FakeModel(), settings, heldout=texts, ood=ood)
    assert (heldout.name, pydoc.name) == ("heldout", "pydoc")
    assert heldout.tokens.equal(
        packed_windows(FakeModel(), texts, "heldout", seq_len=8, max_windows=3, seed=1).tokens
    )
    assert pydoc.tokens.shape == (3, 8)
