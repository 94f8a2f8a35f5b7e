"""Issue 18, item 4: 1-D probing with the prior's meta-neurons against SAE latents, raw dimensions
and PCA components.

Token-level binary tasks are built offline from the packaged corpus
(:mod:`tl_diffusion_prior.evaluate.probe_tasks`: code vs other sources, literature vs manuals,
inside a quotation, inside parentheses, sentence-initial word, capitalised word mid-sentence, a
digit, line-initial token). For each task and each feature family, the paper's protocol
(:mod:`tl_diffusion_prior.evaluate.probing`) picks the best single unit by cross-validated AUC on
training documents and reports its AUC on held-out documents with a bootstrap interval. Families:
the shipped MLP prior's meta-neurons (inputs of each block's down-projection, one family per
``--t``), the raw activation's dimensions, its PCA components (fitted on the probe's training
documents), and with ``--sae DIR`` an SAE's latents. Writes ``report.md`` and ``results.json``
to ``--out``.

    .venv/bin/python benchmarks/meta_neurons.py --out runs/meta_neurons [--sae DIR]
    .venv/bin/python benchmarks/meta_neurons.py --out /tmp/mn_quick --quick   # ~2 min, 1 thread
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import date
from pathlib import Path

import torch

from tl_diffusion_prior.data import load_corpus, load_default_model
from tl_diffusion_prior.data.corpus import corpus_sources
from tl_diffusion_prior.evaluate.baselines import GaussianBaseline, fit_normalizer, load_baseline
from tl_diffusion_prior.evaluate.probe_tasks import DEFAULT_TASKS, document_split, task_labels
from tl_diffusion_prior.evaluate.probing import (
    ProbeConfig,
    best_single_unit,
    meta_neuron_features,
    sae_latent_features,
)
from tl_diffusion_prior.evaluate.token_rows import capture_token_rows, tokenize_documents
from tl_diffusion_prior.priors import load_default_prior


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--sae", default=None, help="a saved SAE baseline at the prior's hook")
    parser.add_argument(
        "--split",
        default="train",
        choices=["train", "heldout"],
        help="corpus split the documents come from (train: every family was fitted on it, so "
        "none is favoured; heldout has too few code and Austen documents for a split)",
    )
    parser.add_argument("--docs-per-source", type=int, default=30)
    parser.add_argument("--tokens-per-doc", type=int, default=128)
    parser.add_argument(
        "--t",
        type=float,
        nargs="+",
        default=[0.1],
        help="meta-neurons' noise level(s); each is its own family (paper: u=0.9 of its code, "
        "t=0.1 here; compare e.g. --t 0.1 0.5, but do not report the better one as the result)",
    )
    parser.add_argument("--prefilter", type=int, default=512)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--test-fraction", type=float, default=0.3)
    parser.add_argument("--n-resamples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--quick", action="store_true", help="a few documents: a smoke test")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.docs_per_source, args.tokens_per_doc, args.prefilter = 8, 64, 128
        args.n_resamples, args.folds = 200, 3
    return args


def documents(args) -> list:
    """``--docs-per-source`` documents of every source (sources balanced)."""
    return [
        doc
        for source in corpus_sources()
        for doc in load_corpus(args.split, [source])[: args.docs_per_source]
    ]


def pca_features(x: torch.Tensor, train_rows: torch.Tensor) -> torch.Tensor:
    """Every principal coordinate of ``x`` under a Gaussian fitted on ``train_rows`` only."""
    gaussian = GaussianBaseline.fit(train_rows, fit_normalizer(train_rows))
    z = gaussian.normalizer.normalize(x).double()
    return ((z - gaussian.mean) @ gaussian.eigenvectors).float()


def feature_families(args, prior, rows, train_row_mask) -> tuple[dict, dict]:
    """Family name -> [n, units] features, and the seconds each took."""
    x = rows.activations
    makers = {
        f"meta-neurons (t={t:g})": lambda t=t: meta_neuron_features(prior, x, t, args.seed)
        for t in args.t
    }
    makers |= {
        "raw dimensions": lambda: x,
        "PCA components": lambda: pca_features(x, x[train_row_mask]),
    }
    if args.sae:
        sae = load_baseline(args.sae)
        makers["SAE latents"] = lambda: sae_latent_features(sae, x)
    features, seconds = {}, {}
    for name, make in makers.items():
        start = time.perf_counter()
        features[name] = make()
        seconds[name] = time.perf_counter() - start
        print(f"{time.strftime('%H:%M:%S')} {name}: {tuple(features[name].shape)}", flush=True)
    return features, seconds


def probe_all(args, tokenized, rows, features, is_test_doc) -> list[dict]:
    """Every task against every family; a task a family cannot be probed on is recorded."""
    config = ProbeConfig(
        prefilter=args.prefilter, n_folds=args.folds, n_resamples=args.n_resamples, seed=args.seed
    )
    results = []
    for task in DEFAULT_TASKS:
        labels = task_labels(task, tokenized.texts, tokenized.spans, tokenized.sources)
        for family, x in features.items():
            entry = {"task": task.name, "description": task.description, "family": family}
            try:
                entry.update(
                    best_single_unit(x, labels, rows.doc_ids, is_test_doc, config).to_dict()
                )
            except ValueError as error:  # too few rows of a class: reported, not hidden
                entry["skipped"] = str(error)
            results.append(entry)
        print(f"{time.strftime('%H:%M:%S')} probed {task.name}", flush=True)
    return results


def write_report(results: dict, path: Path) -> None:
    args = results["args"]
    families = list(dict.fromkeys(r["family"] for r in results["probes"]))
    tasks = list(dict.fromkeys(r["task"] for r in results["probes"]))
    by = {(r["task"], r["family"]): r for r in results["probes"]}
    quick = "**QUICK RUN (a smoke test; the sizes are too small to conclude anything).** "
    lines = [
        "# Meta-neuron probing (issue 18, item 4)",
        "",
        f"{quick if args['quick'] else ''}{results['date']}, {results['machine']}, "
        f"{results['wall_seconds']:.0f} s. {results['n_rows']} tokens of {results['n_docs']} "
        f"documents ({args['docs_per_source']} per source from the {args['split']} split, "
        f"{args['tokens_per_doc']} tokens each at most); {results['n_test_docs']} test documents. "
        f"Best single unit chosen by {args['folds']}-fold CV AUC over training documents among "
        f"the top {args['prefilter']} by standardised mean difference; the table gives its test "
        "AUC [95 % bootstrap over test documents].",
        "",
        "| task | positives | " + " | ".join(families) + " |",
        "|---|---|" + "---|" * len(families),
    ]
    complete = [t for t in tasks if all("skipped" not in by[(t, f)] for f in families)]
    for task in tasks:
        cells, rate = [], ""
        for family in families:
            r = by[(task, family)]
            if "skipped" in r:
                cells.append("skipped")
                continue
            a = r["test_auc"]
            cells.append(f"{a['mean']:.3f} [{a['low']:.3f}, {a['high']:.3f}]")
            rate = f"{r['positive_rate']:.1%}"
        lines.append(f"| {task} | {rate} | " + " | ".join(cells) + " |")
    means = [
        sum(by[(t, f)]["test_auc"]["mean"] for t in complete) / max(1, len(complete))
        for f in families
    ]
    lines.append(
        f"| **mean over {len(complete)} tasks** | | "
        + " | ".join(f"**{m:.3f}**" for m in means)
        + " |"
    )
    lines += [
        "",
        "Feature extraction (s): "
        + ", ".join(f"{k} {v:.1f}" for k, v in results["feature_seconds"].items()),
    ]
    skipped = [r for r in results["probes"] if "skipped" in r]
    lines += [f"- skipped {r['task']} / {r['family']}: {r['skipped']}" for r in skipped]
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    args = parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    model = load_default_model()
    prior = load_default_prior()
    docs = documents(args)
    tokenized = tokenize_documents(
        model.tokenizer,
        [d.text for d in docs],
        args.tokens_per_doc,
        sources=[d.source for d in docs],
    )
    rows = capture_token_rows(model, prior.config.hook_name, tokenized)
    del model
    is_test_doc = document_split(len(tokenized), args.test_fraction, args.seed)
    features, seconds = feature_families(args, prior, rows, ~is_test_doc[rows.doc_ids])
    probes = probe_all(args, tokenized, rows, features, is_test_doc)
    results = {
        "date": str(date.today()),
        "machine": f"{platform.machine()}, torch threads {torch.get_num_threads()}",
        "args": vars(args),
        "n_rows": len(rows),
        "n_docs": len(tokenized),
        "n_test_docs": int(is_test_doc.sum()),
        "feature_seconds": seconds,
        "probes": probes,
        "wall_seconds": time.perf_counter() - started,
    }
    (out / "results.json").write_text(json.dumps(results, indent=1))
    write_report(results, out / "report.md")
    print(f"wrote {out / 'report.md'} in {results['wall_seconds']:.0f} s")


if __name__ == "__main__":
    main()
