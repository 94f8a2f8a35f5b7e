import hashlib
import json
import re
from importlib import resources

import pytest

from tl_diffusion_prior.data.corpus import (
    OUT_OF_DOMAIN_SETS,
    OUT_OF_DOMAIN_SOURCE,
    Document,
    corpus_mix_shares,
    corpus_source_info,
    corpus_sources,
    corpus_summary,
    load_corpus,
    out_of_domain_info,
    out_of_domain_sets,
    out_of_domain_texts,
)

ORIGINAL_SOURCES = ["austen", "shakespeare", "sqlite_docs", "postgresql_docs"]
MODERN_SOURCES = [
    "debian_handbook",
    "debian_reference",
    "git_docs",
    "man_pages",
    "fortunes",
    "python_code",
]
SOURCES = ORIGINAL_SOURCES + MODERN_SOURCES
# The original four files are kept byte for byte (same documents, same held-out split).
ORIGINAL_SHA256 = {
    "austen": "87e20128a969dcab0752cc7deff823ecfdb77263da15b4c5b07c60d23fb83f2f",
    "shakespeare": "172bcd83e8ca078754bd2592e924b4302efaf0a7d6fb4148bca16085c9ac2399",
    "sqlite_docs": "f559c0ec918992da03dbb02c63173ca4becfb271e6048d67849e3b051f3bec1f",
    "postgresql_docs": "7ceaaf4d2b419e1fd1228b5713aabff8b48576d3d0be4efb16d9e78c2fb24cef",
}
# Each source's share of the training characters, as documented in corpus.py and the README.
DOCUMENTED_CHAR_SHARES = {
    "austen": 0.128,
    "shakespeare": 0.091,
    "sqlite_docs": 0.089,
    "postgresql_docs": 0.112,
    "debian_handbook": 0.050,
    "debian_reference": 0.023,
    "git_docs": 0.126,
    "man_pages": 0.162,
    "fortunes": 0.111,
    "python_code": 0.107,
}
DATA_DIR = resources.files("tl_diffusion_prior.data").joinpath("corpus_data")


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_sources_are_varied_and_documented():
    assert corpus_sources() == SOURCES
    info = corpus_source_info()
    kinds = {entry["kind"] for entry in info.values()}
    assert len(kinds) >= 8
    assert {"novel", "play", "technical documentation", "code", "manual pages"} <= kinds
    assert all(entry["licence"] and entry["origin"] for entry in info.values())
    readme = DATA_DIR.joinpath("README.md").read_text(encoding="utf-8")
    for name in [*SOURCES, *OUT_OF_DOMAIN_SETS]:
        assert f"`{name}`" in readme, name


def test_committed_data_is_small_and_matches_the_manifest():
    manifest = json.loads(DATA_DIR.joinpath("manifest.json").read_text())
    entries = [*manifest["sources"].values(), *manifest["out_of_domain"].values()]
    total = 0
    for entry in entries:
        data = DATA_DIR.joinpath(entry["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
        total += len(data)
    assert 3_000_000 < total < 15_000_000
    for source, digest in ORIGINAL_SHA256.items():
        assert manifest["sources"][source]["sha256"] == digest, source


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
        assert 0.03 < n_heldout / (n_train + n_heldout) < 0.12, source


def test_heldout_is_spread_across_works():
    heldout = load_corpus("heldout", sources=["austen"])
    novels = {d.title.split(", chapter")[0] for d in heldout}
    assert len(novels) >= 4


def test_corpus_size_in_characters():
    summary = corpus_summary()
    for source in SOURCES:
        assert summary[source]["train"]["characters"] > 450_000, source
        # 64 windows of 128 tokens need 8,192 tokens: at most 5.2 characters per SmolLM2
        # token in any source (measured; man pages), so 45,000 characters leave a margin.
        assert summary[source]["heldout"]["characters"] > 45_000, source
    # 3.2-5.2 characters per SmolLM2 token (measured per source), 4.0 overall: 20.5M characters
    # are 5.12M tokens (measured; the slow test below counts them).
    assert summary["total"]["train"]["characters"] > 20_000_000
    assert summary["total"]["train"]["documents"] == len(load_corpus("train"))


def test_mixing_proportions_are_as_documented():
    shares = corpus_mix_shares()
    assert list(shares) == SOURCES
    assert sum(shares.values()) == pytest.approx(1.0)
    for source, share in shares.items():
        assert share == pytest.approx(DOCUMENTED_CHAR_SHARES[source], abs=0.001), source
    assert max(shares.values()) < 0.17 and min(shares.values()) > 0.02
    # Interleaved at the same relative pace: the first tenth already has the documented mix.
    docs = load_corpus("train")
    total = sum(len(d.text) for d in docs)
    prefix, size = [], 0
    for doc in docs:
        if size >= total / 10:
            break
        prefix.append(doc)
        size += len(doc.text)
    for source in SOURCES:
        chars = sum(len(d.text) for d in prefix if d.source == source)
        assert chars / size == pytest.approx(shares[source], abs=0.02), source


def test_mix_of_a_subset_keeps_relative_proportions():
    shares = corpus_mix_shares()
    docs = load_corpus("train", sources=["fortunes", "austen"])
    assert {d.source for d in docs} == {"fortunes", "austen"}
    austen = sum(len(d.text) for d in docs if d.source == "austen")
    fortunes = sum(len(d.text) for d in docs if d.source == "fortunes")
    assert austen / fortunes == pytest.approx(shares["austen"] / shares["fortunes"])


def test_load_corpus_is_deterministic_and_mixed_from_the_start():
    first, second = load_corpus(), load_corpus()
    assert first == second
    # Every source within the first 3 % of documents (the handbook's sections are long, so its
    # first one comes at document 63 of 3,300).
    assert {d.source for d in first[: len(first) // 33]} == set(SOURCES)
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
    navigation += ["Prev Up Next", "Prev | Up | Next", "Table of Contents", "Download the ebook"]
    navigation += ["Last updated 20"]
    for doc in load_corpus("heldout"):
        assert "\r" not in doc.text and "\u00a0" not in doc.text
        assert "\n\n\n" not in doc.text and doc.text == doc.text.strip()
        if doc.source in ("austen", "shakespeare"):
            # Austen's footnotes are marked with "*"; nothing else is markup.
            marks = r"[<>_]" if doc.source == "austen" else r"[<>*_]"
            assert not re.search(marks + r"|&\w+;", doc.text), doc.title
        elif doc.source in ("fortunes", "python_code"):
            assert "\t" not in doc.text if doc.source == "fortunes" else True, doc.title
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


def test_out_of_domain_sets_are_two_kinds_apart_from_training():
    sets = out_of_domain_sets()
    assert tuple(sets) == OUT_OF_DOMAIN_SETS == ("pydoc", "conversations")
    assert sets["pydoc"] == out_of_domain_texts()
    conversations = sets["conversations"]
    assert len(conversations) >= 15 and sum(len(d.text) for d in conversations) > 150_000
    assert all(d.source == "conversations" and d.text.startswith("A: ") for d in conversations)
    assert len({d.title for d in conversations}) == len(conversations)
    assert "conversations" not in corpus_sources()
    assert set(out_of_domain_info()) == {"conversations"}
    # No paragraph (pydoc) or conversational turn (conversations) occurs in the corpus.
    corpus_lines = set()
    corpus_paragraphs = set()
    for split in ("train", "heldout"):
        for doc in load_corpus(split):
            paragraphs = doc.text.split("\n\n")
            corpus_paragraphs.update(paragraphs)
            corpus_lines.update(line.strip() for p in paragraphs for line in p.split("\n"))
    for name, docs in sets.items():
        paragraphs = {p for d in docs for p in d.text.split("\n\n") if len(p) > 40}
        assert paragraphs and not paragraphs & corpus_paragraphs, name
    turns = {line[3:] for d in conversations for line in d.text.split("\n") if len(line) > 40}
    assert len(turns) > 500 and not turns & corpus_lines


def test_out_of_domain_texts_have_no_repeated_paragraphs_or_underlines():
    paragraphs = [p for d in out_of_domain_texts() for p in d.text.split("\n\n")]
    assert len(paragraphs) == len(set(paragraphs))
    lines = [line.strip() for p in paragraphs for line in p.split("\n")]
    assert not any(re.fullmatch(r"[*=\-^~]{3,}", line) for line in lines)


@pytest.mark.slow
def test_corpus_has_over_five_million_smollm2_tokens():
    from gguf import GGUFReader

    from tl_diffusion_prior.data.corpus import count_tokens
    from tl_diffusion_prior.data.gguf import build_tokenizer, find_default_gguf

    tokenizer = build_tokenizer(GGUFReader(find_default_gguf()))
    summary = corpus_summary(tokenizer)
    assert summary["total"]["train"]["tokens"] > 5_000_000
    for source in SOURCES:
        assert summary[source]["train"]["tokens"] > 100_000, source
        # At least 64 held-out windows of 128 tokens from every source.
        assert summary[source]["heldout"]["tokens"] > 64 * 128, source
    for name, docs in out_of_domain_sets().items():
        assert count_tokens([d.text for d in docs], tokenizer) > 30_000, name
