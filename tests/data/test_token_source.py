import itertools
import json

import pytest
import torch

from tests.data.helpers import BOS, EOS, TEXTS, all_batches, build_byte_tokenizer
from tl_diffusion_prior.data.corpus import Document
from tl_diffusion_prior.data.token_source import TextTokenSource, TokenSource


@pytest.fixture(scope="module")
def tokenizer():
    return build_byte_tokenizer()


def encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def expected_stream(tokenizer, texts, separator=EOS) -> list[int]:
    stream = []
    for text in texts:
        stream += encode(tokenizer, text) + ([] if separator is None else [separator])
    return stream


def test_text_token_source_is_a_token_source(tokenizer):
    source = TextTokenSource(TEXTS, tokenizer, batch_size=4, ctx=16)
    assert isinstance(source, TokenSource)
    assert (source.batch_size, source.ctx, source.rank, source.world_size) == (4, 16, 0, 1)


def test_batches_have_shape_dtype_and_bos(tokenizer):
    batches = all_batches(TextTokenSource(TEXTS, tokenizer, batch_size=4, ctx=16))
    assert len(batches) > 3
    for batch in batches:
        assert batch.shape == (4, 16) and batch.dtype == torch.long
        assert (batch[:, 0] == BOS).all()
        assert (batch[:, 1:] != BOS).all()


def test_rows_pack_documents_with_eos_between_them(tokenizer):
    source = TextTokenSource(TEXTS, tokenizer, batch_size=3, ctx=17, drop_remainder=False)
    rows = torch.cat(all_batches(source))
    stream = expected_stream(tokenizer, TEXTS)
    n_rows = len(stream) // 16
    assert rows.shape == (n_rows, 17)
    assert rows[:, 1:].flatten().tolist() == stream[: n_rows * 16]
    assert tokenizer.decode(rows[0, 1:]).startswith("Document 0: word")


@pytest.mark.parametrize(("separator", "token"), [("none", None), ("bos", BOS), (300, 300)])
def test_separator_and_no_bos(tokenizer, separator, token):
    source = TextTokenSource(
        TEXTS, tokenizer, 2, 10, prepend_bos=False, separator=separator, drop_remainder=False
    )
    rows = torch.cat(all_batches(source))
    stream = expected_stream(tokenizer, TEXTS, separator=token)
    assert rows.flatten().tolist() == stream[: len(stream) // 10 * 10]


def test_drop_remainder_drops_only_the_short_last_batch(tokenizer):
    stream_rows = len(expected_stream(tokenizer, TEXTS)) // 15
    assert stream_rows % 4  # the test needs a short last batch
    kept = all_batches(TextTokenSource(TEXTS, tokenizer, 4, 16, drop_remainder=False))
    dropped = all_batches(TextTokenSource(TEXTS, tokenizer, 4, 16))
    assert len(kept) == len(dropped) + 1
    assert kept[-1].shape == (stream_rows % 4, 16)
    assert all(torch.equal(a, b) for a, b in zip(kept, dropped, strict=False))


def test_documents_and_strings_give_the_same_batches(tokenizer):
    docs = [Document(text, "test", str(i)) for i, text in enumerate(TEXTS)]
    a = all_batches(TextTokenSource(TEXTS, tokenizer, 4, 16))
    b = all_batches(TextTokenSource(docs, tokenizer, 4, 16))
    assert len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_shuffle_is_seeded_and_differs_per_epoch(tokenizer):
    def run(seed):
        return torch.cat(all_batches(TextTokenSource(TEXTS, tokenizer, 4, 16, shuffle_seed=seed)))

    assert torch.equal(run(0), run(0))
    assert not torch.equal(run(0), run(1))
    assert not torch.equal(run(0), torch.cat(all_batches(TextTokenSource(TEXTS, tokenizer, 4, 16))))
    two_epochs = TextTokenSource(TEXTS, tokenizer, 2, 16, shuffle_seed=0, epochs=2)
    per_epoch = two_epochs.rows_per_epoch()
    rows = torch.cat(all_batches(two_epochs))
    assert len(rows) == 2 * per_epoch
    assert not torch.equal(rows[:per_epoch], rows[per_epoch:])


def test_repeat_forever_cycles_the_same_rows_without_shuffle(tokenizer):
    source = TextTokenSource(TEXTS, tokenizer, 1, 16, epochs=None)
    per_epoch = source.rows_per_epoch()
    rows = torch.cat(list(itertools.islice(source, 3 * per_epoch)))
    assert torch.equal(rows[:per_epoch], rows[per_epoch : 2 * per_epoch])
    assert torch.equal(rows[:per_epoch], rows[2 * per_epoch :])


@pytest.mark.parametrize("world_size", [2, 3])
def test_shards_are_disjoint_and_cover_every_batch(tokenizer, world_size):
    full = TextTokenSource(TEXTS, tokenizer, 2, 16, drop_remainder=False, shuffle_seed=3)
    expected = all_batches(full)
    shards = [all_batches(full.shard(rank, world_size)) for rank in range(world_size)]
    merged = [shards[i % world_size][i // world_size] for i in range(len(expected))]
    assert sum(len(s) for s in shards) == len(expected)
    assert all(torch.equal(a, b) for a, b in zip(merged, expected, strict=True))
    by_args = TextTokenSource(
        TEXTS, tokenizer, 2, 16, drop_remainder=False, shuffle_seed=3, rank=1, world_size=world_size
    )
    assert all(torch.equal(a, b) for a, b in zip(all_batches(by_args), shards[1], strict=True))


def test_sharding_with_drop_remainder_gives_every_rank_the_same_count(tokenizer):
    source = TextTokenSource(TEXTS, tokenizer, 2, 16)
    total = len(all_batches(source))
    assert total % 3  # otherwise every round would be complete
    counts = [len(all_batches(source.shard(rank, 3))) for rank in range(3)]
    assert counts == [total // 3] * 3


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"shuffle_seed": 5, "epochs": 3},
        {"shuffle_seed": 5, "epochs": 3, "rank": 1, "world_size": 2},
    ],
)
def test_state_dict_resumes_at_exactly_the_next_batch(tokenizer, settings):
    source = TextTokenSource(TEXTS, tokenizer, 2, 16, **settings)
    reference = all_batches(TextTokenSource(TEXTS, tokenizer, 2, 16, **settings))
    stop = len(reference) * 2 // 3  # in the last epoch when there are three
    taken = list(itertools.islice(source, stop))
    state = json.loads(json.dumps(source.state_dict()))
    assert state["batches_yielded"] == stop
    resumed = TextTokenSource(list(TEXTS), tokenizer, 2, 16, **settings)
    resumed.load_state_dict(state)
    rest = all_batches(resumed)
    assert len(taken) + len(rest) == len(reference)
    assert all(torch.equal(a, b) for a, b in zip(taken + rest, reference, strict=True))


def test_iteration_continues_from_the_position_until_reset(tokenizer):
    source = TextTokenSource(TEXTS, tokenizer, 2, 16)
    first = next(iter(source))
    second = next(iter(source))
    assert not torch.equal(first, second)
    source.reset()
    assert torch.equal(next(iter(source)), first)


def test_load_state_dict_rejects_other_settings(tokenizer):
    state = TextTokenSource(TEXTS, tokenizer, 2, 16).state_dict()
    with pytest.raises(ValueError, match="ctx"):
        TextTokenSource(TEXTS, tokenizer, 2, 32).load_state_dict(state)
    with pytest.raises(ValueError, match="rank"):
        TextTokenSource(TEXTS, tokenizer, 2, 16, rank=1, world_size=2).load_state_dict(state)
    with pytest.raises(ValueError, match="num_texts"):
        TextTokenSource(TEXTS[:-1], tokenizer, 2, 16).load_state_dict(state)
    with pytest.raises(ValueError):
        TextTokenSource(TEXTS, tokenizer, 2, 16).load_state_dict({"kind": "Other"})


def test_streamed_texts_match_a_list_and_resume(tokenizer):
    class Stream:  # re-iterable, not a Sequence: tokenised lazily each epoch
        def __iter__(self):
            return iter(TEXTS)

    reference = all_batches(TextTokenSource(TEXTS, tokenizer, 2, 16, epochs=2))
    streamed = TextTokenSource(Stream(), tokenizer, 2, 16, epochs=2, encode_batch=3)
    head = list(itertools.islice(streamed, 5))
    resumed = TextTokenSource(Stream(), tokenizer, 2, 16, epochs=2)
    resumed.load_state_dict(streamed.state_dict())
    batches = head + all_batches(resumed)
    assert all(torch.equal(a, b) for a, b in zip(batches, reference, strict=True))
    one_shot = TextTokenSource(iter(TEXTS), tokenizer, 2, 16)
    assert len(all_batches(one_shot)) == len(reference) // 2


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"batch_size": 0}, ValueError),
        ({"ctx": 1}, ValueError),
        ({"rank": 2, "world_size": 2}, ValueError),
        ({"epochs": 0}, ValueError),
        ({"separator": -1}, ValueError),
        ({"texts": "one long string"}, TypeError),
        ({"texts": [b"bytes"]}, TypeError),
        ({"texts": iter(TEXTS), "epochs": 2}, ValueError),
        ({"texts": iter(TEXTS), "shuffle_seed": 0}, ValueError),
    ],
)
def test_invalid_arguments_are_rejected(tokenizer, kwargs, error):
    arguments = {"texts": TEXTS, "tokenizer": tokenizer, "batch_size": 2, "ctx": 8, **kwargs}
    with pytest.raises(error):
        list(TextTokenSource(**arguments))


def test_missing_special_tokens_are_reported():
    no_eos = build_byte_tokenizer(eos_token=None)
    with pytest.raises(ValueError, match="eos_token_id"):
        TextTokenSource(TEXTS, no_eos, 2, 8)
    assert len(all_batches(TextTokenSource(TEXTS, no_eos, 2, 8, separator="none"))) > 0
    no_bos = build_byte_tokenizer(bos_token=None)
    with pytest.raises(ValueError, match="bos_token_id"):
        TextTokenSource(TEXTS, no_bos, 2, 8)
