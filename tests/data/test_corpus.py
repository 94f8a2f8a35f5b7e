import hashlib
import json
import re
from importlib import resources

import pytest

from tl_diffusion_prior.data.corpus import (
    OUT_OF_DOMAIN_SOURCE,
    Document,
    corpus_source_info,
    corpus_sources,
    corpus_summary,
    load_corpus,
    out_of_domain_texts,
)

SOURCES = ["austen", "shakespeare", "sqlite_docs", "postgresql_docs"]
DATA_DIR = resources.files("tl_diffusion_prior.data").joinpath("corpus_data")


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_sources_are_varied_and_documented():
    assert corpus_sources() == SOURCES
    info = corpus_source_info()
    kinds = {entry["kind"] for entry in info.values()}
    assert {"novel", "play", "technical documentation"} <= kinds
    assert all(entry["licence"] and entry["origin"] for entry in info.values())
    readme = DATA_DIR.joinpath("README.md").read_text(encoding="utf-8")
    for source in SOURCES:
        assert source in readme


def test_committed_data_is_small_and_matches_the_manifest():
    manifest = json.loads(DATA_DIR.joinpath("manifest.json").read_text())
    total = 0
    for source in SOURCES:
        data = DATA_DIR.joinpath(manifest["sources"][source]["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == manifest["sources"][source]["sha256"]
        total += len(data)
    assert 1_000_000 < total < 5_000_000


def test_train_and_heldout_are_disjoint_and_cover_every_source():
    train, heldout = load_corpus("train"), load_corpus("heldout")
    assert {d.source for d in train} == {d.source for d in heldout} == set(SOURCES)
    train_keys = {(d.source, d.title) for d in train}
    heldout_keys = {(d.source, d.title) for d in heldout}
    assert len(train_keys) == len(train) and len(heldout_keys) == len(heldout)
    assert not train_keys & heldout_keys
    assert not {_digest(d.text) for d in train} & {_digest(d.text) for d in heldout}
    for source in SOURCES:
        n_train = sum(d.source == source for d in train)
        n_heldout = sum(d.source == source for d in heldout)
        assert 0.03 < n_heldout / (n_train + n_heldout) < 0.08, source


def test_heldout_is_spread_across_works():
    heldout = load_corpus("heldout", sources=["austen"])
    novels = {d.title.split(", chapter")[0] for d in heldout}
    assert len(novels) >= 4


def test_corpus_size_in_characters():
    summary = corpus_summary()
    for source in SOURCES:
        assert summary[source]["train"]["characters"] > 1_500_000, source
        assert summary[source]["heldout"]["characters"] > 50_000, source
    # ~4 characters per SmolLM2 token: 8M characters is about 2M tokens.
    assert summary["total"]["train"]["characters"] > 8_000_000
    assert summary["total"]["train"]["documents"] == len(load_corpus("train"))


def test_load_corpus_is_deterministic_and_mixed_from_the_start():
    first, second = load_corpus(), load_corpus()
    assert first == second
    assert {d.source for d in first[:20]} == set(SOURCES)
    # Shuffled within each source: the first Austen chapters are not all from one novel.
    austen = [d.title.split(", chapter")[0] for d in first if d.source == "austen"][:10]
    assert len(set(austen)) >= 3


def test_load_corpus_selects_sources_in_a_fixed_order():
    docs = load_corpus("heldout", sources=["sqlite_docs", "austen"])
    assert {d.source for d in docs} == {"austen", "sqlite_docs"}
    assert docs == load_corpus("heldout", sources=["austen", "sqlite_docs"])
    assert all(isinstance(d, Document) and d.text and d.title for d in docs)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        # ValueError at run time; under pytest the Literal annotation is checked first.
        ({"split": "test"}, (ValueError, TypeError)),
        ({"sources": ["wikipedia"]}, ValueError),
        ({"sources": []}, ValueError),
        ({"sources": "austen"}, TypeError),
    ],
)
def test_load_corpus_rejects_bad_arguments(kwargs, error):
    with pytest.raises(error):
        load_corpus(**kwargs)


def test_documents_are_clean_text():
    navigation = ["Small. Fast. Reliable.", "Search Documentation", "This page last modified"]
    navigation += ["Prev Up Next", "Prev | Up | Next", "Table of Contents"]
    for doc in load_corpus("heldout"):
        assert "\r" not in doc.text and "\u00a0" not in doc.text
        assert "\n\n\n" not in doc.text and doc.text == doc.text.strip()
        if doc.source in ("austen", "shakespeare"):
            # Austen's footnotes are marked with "*"; nothing else is markup.
            marks = r"[<>_]" if doc.source == "austen" else r"[<>*_]"
            assert not re.search(marks + r"|&\w+;", doc.text), doc.title
        else:  # documentation may quote HTML in its examples, but not be made of it
            assert not any(phrase in doc.text for phrase in navigation), doc.title
            assert len(re.findall(r"</?(div|span|td|tr|h\d)\b", doc.text)) < 3, doc.title


def test_corpus_summary_counts_tokens_with_a_tokenizer():
    def whitespace_tokenizer(texts, **kwargs):
        assert kwargs["add_special_tokens"] is False
        return {"input_ids": [text.split() for text in texts]}

    summary = corpus_summary(whitespace_tokenizer)
    words = sum(len(d.text.split()) for d in load_corpus("heldout", sources=["shakespeare"]))
    assert summary["shakespeare"]["heldout"]["tokens"] == words
    assert summary["total"]["train"]["tokens"] == sum(
        summary[s]["train"]["tokens"] for s in SOURCES
    )


def test_out_of_domain_texts_are_python_docs_not_in_the_corpus():
    ood = out_of_domain_texts()
    assert len(ood) >= 40
    assert sum(len(d.text) for d in ood) > 200_000
    assert all(d.source == OUT_OF_DOMAIN_SOURCE and len(d.text) >= 200 for d in ood)
    assert len({d.title for d in ood}) == len(ood)
    assert any("statement" in d.text for d in ood)
    ood_paragraphs = {p for d in ood for p in d.text.split("\n\n") if len(p) > 80}
    assert len(ood_paragraphs) > 500
    for split in ("train", "heldout"):
        corpus_paragraphs = {p for d in load_corpus(split) for p in d.text.split("\n\n")}
        assert not ood_paragraphs & corpus_paragraphs
    assert OUT_OF_DOMAIN_SOURCE not in corpus_sources()


def test_out_of_domain_texts_have_no_repeated_paragraphs_or_underlines():
    paragraphs = [p for d in out_of_domain_texts() for p in d.text.split("\n\n")]
    assert len(paragraphs) == len(set(paragraphs))
    lines = [line.strip() for p in paragraphs for line in p.split("\n")]
    assert not any(re.fullmatch(r"[*=\-^~]{3,}", line) for line in lines)


@pytest.mark.slow
def test_corpus_has_over_a_million_smollm2_tokens():
    from gguf import GGUFReader

    from tl_diffusion_prior.data.gguf import build_tokenizer, find_default_gguf

    tokenizer = build_tokenizer(GGUFReader(find_default_gguf()))
    summary = corpus_summary(tokenizer)
    assert summary["total"]["train"]["tokens"] > 1_500_000
    assert summary["total"]["train"]["tokens"] + summary["total"]["heldout"]["tokens"] > 2_000_000
    for source in SOURCES:
        assert summary[source]["train"]["tokens"] > 300_000, source
        assert summary[source]["heldout"]["tokens"] > 10_000, source
