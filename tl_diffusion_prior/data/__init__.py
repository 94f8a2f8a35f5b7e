"""Stage 0: text (the packaged corpus, token sources) and the source model."""

from tl_diffusion_prior.data.corpus import (
    Document,
    load_corpus,
    out_of_domain_sets,
    out_of_domain_texts,
)
from tl_diffusion_prior.data.models import load_default_model, load_model
from tl_diffusion_prior.data.sources import (
    corpus_token_source,
    hf_dataset_token_source,
    text_file_token_source,
)
from tl_diffusion_prior.data.token_source import TextTokenSource, TokenSource

__all__ = [
    "Document",
    "TextTokenSource",
    "TokenSource",
    "corpus_token_source",
    "hf_dataset_token_source",
    "load_corpus",
    "load_default_model",
    "load_model",
    "out_of_domain_sets",
    "out_of_domain_texts",
    "text_file_token_source",
]
