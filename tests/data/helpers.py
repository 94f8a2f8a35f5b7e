"""Shared by the token-source tests: a byte-level tokenizer, test documents, batch collection."""

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

BOS, EOS = 256, 257


def build_byte_tokenizer(**special) -> PreTrainedTokenizerFast:
    """One token per UTF-8 byte (ids 0-255) plus <bos>=256, <eos>=257, <pad>=258: exact, instant,
    and small enough for the tiny test model's 300-token vocabulary."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {char: index for index, char in enumerate(alphabet)}
    vocab.update({"<bos>": BOS, "<eos>": EOS, "<pad>": 258})
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    names = {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", **special}
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, **{k: v for k, v in names.items() if v is not None}
    )


TEXTS = [f"Document {i}: " + "word " * (5 + 7 * i % 23) + "end." for i in range(40)]


def all_batches(source) -> list[torch.Tensor]:
    return list(source)
