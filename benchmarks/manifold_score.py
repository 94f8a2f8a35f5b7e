"""Issue 18, item 3: does the prior's manifold score tell shifted activations from clean ones?

On the default model (SmolLM2-135M-Instruct, the shipped MLP prior, ``blocks.15.hook_resid_post``)
clean held-out tokens of the packaged corpus are compared with

(i) the same tokens after plain steering at a few relative scales (``r * reference_norm * unit
    concept vector`` added to the activation at the hook: exactly what the hook adds and what the
    monitor's score sees);
(ii) the same tokens with Gaussian noise at a few levels (in units of each dimension's std);
(iii) tokens of other domains: pydoc, chat conversations, and hand-written French/German prose and
    JSON/CSV data (``foreign_texts.py``), none of which the corpus has.

Scores (larger = less typical): the prior's ``score`` (``--method``), and three baselines fitted on
TRAINING-split activations only: the Gaussian's Mahalanobis distance, the distance to the ``k``
nearest training activations, and (``--sae DIR``) an SAE's reconstruction error. Each gets an
AUROC (shifted = positive) with a 95 % bootstrap interval over documents. Also: how the score of
steered generations relates to their fluency (NLL under the unsteered model, the text judge), and
the per-token score along a few texts. Writes ``report.md``, ``results.json`` and plots to
``--out``.

    .venv/bin/python benchmarks/manifold_score.py --out runs/manifold_score [--sae DIR]
    .venv/bin/python benchmarks/manifold_score.py --out /tmp/ms_quick --quick   # ~2-3 min, 1 thread
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import date
from pathlib import Path

import torch
from foreign_texts import FRENCH_GERMAN, JSON_CSV
from manifold_score_report import fluency_rows, plot_aurocs, write_report

from tl_diffusion_prior.data import load_corpus, load_default_model, out_of_domain_sets
from tl_diffusion_prior.evaluate.baselines import GaussianBaseline, fit_normalizer, load_baseline
from tl_diffusion_prior.evaluate.concepts import DEFAULT_CONCEPTS, DEFAULT_PROMPTS
from tl_diffusion_prior.evaluate.ood import (
    KNNDistance,
    mahalanobis_distance,
    noise_rows,
    reconstruction_error,
    shift_aurocs,
    steer_rows,
)
from tl_diffusion_prior.evaluate.token_rows import capture_token_rows, tokenize_documents
from tl_diffusion_prior.priors import load_default_prior
from tl_diffusion_prior.steering import reference_norm_from_prior, steering_vector
from tl_diffusion_prior.steering.text_scores import plot_text_scores, score_texts

#: Document ids of another domain's rows start here (clean documents are numbered from 0).
_DOMAIN_ID_OFFSET = 1_000_000


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--sae", default=None, help="a saved SAE baseline at the prior's hook")
    parser.add_argument("--method", default="elbo", help="the prior's score: elbo or one_step")
    parser.add_argument("--heldout-docs", type=int, default=186, help="clean held-out documents")
    parser.add_argument("--train-docs", type=int, default=600, help="documents for the baselines")
    parser.add_argument("--ood-docs", type=int, default=60, help="documents per other domain")
    parser.add_argument("--tokens-per-doc", type=int, default=128)
    parser.add_argument("--scales", type=float, nargs="+", default=[0.05, 0.1, 0.25, 0.5])
    parser.add_argument("--noise-levels", type=float, nargs="+", default=[0.1, 0.25, 0.5, 1.0])
    parser.add_argument("--concept", default="joy", help="a DEFAULT_CONCEPTS name to steer along")
    parser.add_argument("--knn-k", type=int, default=10)
    parser.add_argument("--n-resamples", type=int, default=1000)
    parser.add_argument("--fluency-concepts", type=int, default=4)
    parser.add_argument("--fluency-prompts", type=int, default=4)
    parser.add_argument("--fluency-scales", type=float, nargs="+", default=[0.0, 0.3, 0.6, 1.0])
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--quick", action="store_true", help="a few documents: a smoke test")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.heldout_docs, args.train_docs, args.ood_docs, args.tokens_per_doc = 24, 48, 8, 48
        args.scales, args.noise_levels = [0.1, 0.5], [0.25, 1.0]
        args.fluency_concepts, args.fluency_prompts, args.max_new_tokens = 2, 1, 12
        args.fluency_scales, args.n_resamples = [0.0, 1.0], 200
    return args


def capture(model, hook, docs, tokens_per_doc):
    """Token rows of ``docs`` (Document objects or strings) and the tokenised documents."""
    texts = [getattr(d, "text", d) for d in docs]
    sources = [getattr(d, "source", None) for d in docs]
    tokenized = tokenize_documents(model.tokenizer, texts, tokens_per_doc, sources=sources)
    return capture_token_rows(model, hook, tokenized), tokenized


def build_scorers(args, prior, train_rows) -> dict:
    """Scorer name -> RAW [n, d] -> [n]; baselines fitted on training rows only."""
    normalizer = prior.normalizer
    gaussian = GaussianBaseline.fit(train_rows, fit_normalizer(train_rows))
    knn = KNNDistance(train_rows, normalizer, k=args.knn_k)
    scorers = {
        f"prior ({args.method})": lambda x: prior.score(x, args.method),
        "Mahalanobis": lambda x: mahalanobis_distance(gaussian, x),
        f"kNN (k={args.knn_k})": knn,
    }
    if args.sae:
        sae = load_baseline(args.sae)
        scorers["SAE recon. error"] = lambda x: reconstruction_error(sae, normalizer, x)
    return scorers


def shifted_sets(args, model, prior, hook, clean) -> tuple[dict, dict, dict]:
    """Shift name -> rows, -> document ids, -> kind ("steered", "noised", "domain")."""
    concept = next(c for c in DEFAULT_CONCEPTS if c.name == args.concept)
    vector = steering_vector(model, hook, concept.positive, concept.negative).float().cpu()
    norm = reference_norm_from_prior(prior)
    rows, groups, kinds = {}, {}, {}
    for r in args.scales:
        name = f"steered r={r:g}"
        rows[name], groups[name], kinds[name] = (
            steer_rows(clean.activations, vector, r, norm),
            clean.doc_ids,
            "steered",
        )
    generator = torch.Generator().manual_seed(0)
    for level in args.noise_levels:
        name = f"noised {level:g} std"
        noisy = noise_rows(clean.activations, level, prior.normalizer, generator)
        rows[name], groups[name], kinds[name] = noisy, clean.doc_ids, "noised"
    domains = {name: docs[: args.ood_docs] for name, docs in out_of_domain_sets().items()}
    domains["French/German"] = list(FRENCH_GERMAN)
    domains["JSON/CSV"] = list(JSON_CSV)
    for index, (name, docs) in enumerate(domains.items()):
        domain_rows, _ = capture(model, hook, docs, args.tokens_per_doc)
        offset = _DOMAIN_ID_OFFSET * (index + 1)
        rows[name], groups[name], kinds[name] = (
            domain_rows.activations,
            domain_rows.doc_ids + offset,
            "domain",
        )
    return rows, groups, kinds


def score_all(scorers, clean_rows, rows) -> tuple[dict, dict, dict]:
    """Every scorer on the clean rows and on every shift; seconds per 1000 rows per scorer."""
    clean, shifted, seconds = {}, {name: {} for name in rows}, {}
    for scorer_name, scorer in scorers.items():
        start, count = time.perf_counter(), 0
        clean[scorer_name] = scorer(clean_rows).float().cpu()
        count += clean_rows.shape[0]
        for shift, x in rows.items():
            shifted[shift][scorer_name] = scorer(x).float().cpu()
            count += x.shape[0]
        seconds[scorer_name] = 1e6 * (time.perf_counter() - start) / count
        print(f"{time.strftime('%H:%M:%S')} scored with {scorer_name}", flush=True)
    return clean, shifted, seconds


def chat_prompt(model, prompt: str) -> str:
    """A user turn of the instruct model's chat template (bare requests often end at once)."""
    return model.tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
    )


def plot_token_scores(model, prior, args, heldout_docs, out: Path) -> list[dict]:
    """Per-token scores along a held-out text, a pydoc topic, French prose and a CSV table."""
    texts = [
        heldout_docs[0].text[:400],
        out_of_domain_sets()["pydoc"][0].text[:400],
        FRENCH_GERMAN[0],
        JSON_CSV[3],
    ]
    results = score_texts(model, prior, texts, method=args.method, max_tokens=56)  # labelled
    plot_text_scores(results, out / "token_scores.png", title="manifold score per token")
    return [{"text": r.text[:80], "summary": r.summary()} for r in results]


def main() -> None:
    args = parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    model = load_default_model()
    prior = load_default_prior()
    hook = prior.config.hook_name
    heldout_docs = load_corpus("heldout")[: args.heldout_docs]
    clean, _ = capture(model, hook, heldout_docs, args.tokens_per_doc)
    train, _ = capture(model, hook, load_corpus("train")[: args.train_docs], args.tokens_per_doc)
    print(
        f"{time.strftime('%H:%M:%S')} {len(clean)} clean rows, {len(train)} training rows",
        flush=True,
    )
    rows, groups, kinds = shifted_sets(args, model, prior, hook, clean)
    scorers = build_scorers(args, prior, train.activations)
    clean_scores, shifted_scores, ms_per_1000 = score_all(scorers, clean.activations, rows)
    table = shift_aurocs(clean_scores, clean.doc_ids, shifted_scores, groups, args.n_resamples)
    fluency = fluency_rows(model, prior, hook, args, chat_prompt, DEFAULT_CONCEPTS, DEFAULT_PROMPTS)
    token_plots = plot_token_scores(model, prior, args, heldout_docs, out)
    plot_aurocs(table, kinds, out / "aurocs.png")
    results = {
        "date": str(date.today()),
        "machine": f"{platform.machine()}, torch threads {torch.get_num_threads()}",
        "args": vars(args),
        "hook": hook,
        "n_clean_rows": len(clean),
        "n_clean_docs": int(clean.doc_ids.unique().numel()),
        "n_train_rows": len(train),
        "shift_rows": {name: int(x.shape[0]) for name, x in rows.items()},
        "shift_kinds": kinds,
        "ms_per_1000_rows": ms_per_1000,
        "aurocs": [r.to_dict() for r in table],
        "fluency": fluency,
        "token_plots": token_plots,
        "wall_seconds": time.perf_counter() - started,
    }
    (out / "results.json").write_text(json.dumps(results, indent=1, default=float))
    write_report(results, out / "report.md")
    print(f"wrote {out / 'report.md'} in {results['wall_seconds']:.0f} s")


if __name__ == "__main__":
    main()
