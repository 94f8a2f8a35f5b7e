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


def test_held_out_windows_are_cut_per_source_and_ood_sets_keep_their_names():
    docs = [
        Document(c * 40, src, f"{src}{i}")
        for i, (c, src) in enumerate(
            [("a", "one"), ("b", "two"), ("c", "one"), ("d", "two"), ("e", "three")]
        )
    ]
    ood = {"pydoc": ["zyxwvu" * 6], "second": ["tsrqpo" * 9]}
    settings = EvalSettings(seq_len=8, max_sequences=3, seed=1)
    heldout, pydoc, second = held_out_windows(FakeModel(), settings, heldout=docs, ood=ood)
    assert (heldout.name, pydoc.name, second.name) == ("heldout", "pydoc", "second")
    # Three windows from each source, labelled, with bootstrap clusters that never straddle two.
    assert heldout.groups == ("one",) * 3 + ("two",) * 3 + ("three",) * 3
    assert heldout.tokens.shape == (9, 8)
    assert len(set(heldout.doc_ids.tolist())) == 9
    one = packed_windows(FakeModel(), [d for d in docs if d.source == "one"], "x", 8, 3, seed=1)
    assert heldout.tokens[:3].equal(one.tokens)
    pooled = held_out_windows(
        FakeModel(),
        EvalSettings(seq_len=8, max_sequences=3, per_source=False),
        heldout=docs,
        ood=ood,
    )[0]
    assert pooled.groups is None and pooled.tokens.shape == (3, 8)
