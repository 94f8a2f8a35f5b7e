import pytest
import torch

from tests.data.helpers import BOS, TEXTS, all_batches, build_byte_tokenizer
from tl_diffusion_prior.data.sources import (
    corpus_token_source,
    hf_dataset_token_source,
    text_file_token_source,
)
from tl_diffusion_prior.data.token_source import TextTokenSource


@pytest.fixture(scope="module")
def tokenizer():
    return build_byte_tokenizer()


def test_corpus_token_source_reads_the_packaged_corpus(tokenizer):
    source = corpus_token_source(tokenizer, split="heldout", batch_size=2, ctx=32)
    batch = next(iter(source))
    assert batch.shape == (2, 32) and (batch[:, 0] == BOS).all()
    assert source.state_dict()["num_texts"] > 40
    austen = corpus_token_source(tokenizer, "heldout", 2, 32, sources=["austen"])
    assert tokenizer.decode(next(iter(austen))[0, 1:]).startswith("Chapter ")
    man = corpus_token_source(tokenizer, "heldout", 2, 32, sources=["man_pages"])
    assert tokenizer.decode(next(iter(man))[0, 1:]).startswith("NAME\n")


def test_text_file_token_source_matches_the_texts(tokenizer, tmp_path):
    paths = []
    for i, text in enumerate(TEXTS[:6]):
        paths.append(tmp_path / f"{i}.txt")
        paths[-1].write_text(text, encoding="utf-8")
    from_files = all_batches(text_file_token_source(paths, tokenizer, batch_size=2, ctx=16))
    from_texts = all_batches(TextTokenSource(TEXTS[:6], tokenizer, 2, 16))
    assert all(torch.equal(a, b) for a, b in zip(from_files, from_texts, strict=True))
    shuffled = text_file_token_source(paths, tokenizer, 2, 16, shuffle_seed=0, epochs=2)
    assert len(all_batches(shuffled)) >= 2 * len(from_texts)
    with pytest.raises(FileNotFoundError):
        text_file_token_source([tmp_path / "missing.txt"], tokenizer)


def test_text_file_token_source_splits_long_files_at_line_breaks(tokenizer, tmp_path):
    text = "".join(f"line {i} of a long file\n" for i in range(200))
    path = tmp_path / "long.txt"
    path.write_text(text, encoding="utf-8")
    source = text_file_token_source(
        str(path), tokenizer, 1, 16, prepend_bos=False, separator="none", max_document_chars=100
    )
    parts = list(source.texts)
    assert "".join(parts) == text
    assert all(len(p) <= 100 and p.endswith("\n") for p in parts)
    rows = torch.cat(all_batches(source))
    assert tokenizer.decode(rows.flatten()) == text[: len(rows.flatten())]


def test_hf_dataset_token_source_with_local_datasets(tokenizer, tmp_path):
    import datasets

    reference = all_batches(TextTokenSource(TEXTS, tokenizer, 2, 16))
    in_memory = datasets.Dataset.from_dict({"text": TEXTS, "id": list(range(len(TEXTS)))})
    mapped = all_batches(hf_dataset_token_source(in_memory, tokenizer, batch_size=2, ctx=16))
    assert all(torch.equal(a, b) for a, b in zip(mapped, reference, strict=True))
    seeded = hf_dataset_token_source(in_memory, tokenizer, batch_size=2, ctx=16, shuffle_seed=0)
    seeded_list = TextTokenSource(TEXTS, tokenizer, 2, 16, shuffle_seed=0)
    assert torch.equal(torch.cat(all_batches(seeded)), torch.cat(all_batches(seeded_list)))

    path = tmp_path / "lines.txt"
    path.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    streamed = hf_dataset_token_source(
        "text", tokenizer, batch_size=2, ctx=16, dataset_kwargs={"data_files": str(path)}
    )
    batches = all_batches(streamed)
    assert all(torch.equal(a, b) for a, b in zip(batches, reference, strict=True))
    with pytest.raises(ValueError, match="text_column"):
        hf_dataset_token_source(in_memory, tokenizer, text_column="body")


def test_batches_feed_a_hooked_transformer(tokenizer, tiny_model):
    source = corpus_token_source(tokenizer, "heldout", batch_size=2, ctx=tiny_model.cfg.n_ctx)
    logits = tiny_model(next(iter(source)))
    assert logits.shape == (2, tiny_model.cfg.n_ctx, tiny_model.cfg.d_vocab)
    assert torch.isfinite(logits).all()
