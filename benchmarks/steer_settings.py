"""Where does plain steering work best on the default model? Layers, steered positions, vectors.

Issue 15, item 1: with the units fixed, measure the settings rather than guess them. Every row is
plain steering (no prior: the shipped prior models layer 15 only) of the same concepts and held-out
prompts (chat template, sampled with temperature 0.7 / top-p 0.9, each seed giving every setting
the same random numbers), scored as in ``benchmarks/steer_front.py``: the concept lift, held-out
lexicon words and the fraction of texts the judge calls fluent, with 95% bootstrap intervals.

* ``--layers``: the hook ``blocks.L.hook_resid_post`` for each L, all positions, the mean-of-
  differences vector from each concept's 4 contrast pairs, the scale relative to the mean
  activation norm *at that layer* (``mean_activation_norm`` over the prompts);
* ``--positions``: at layer ``--layer``, steering ``all`` positions (prompt and generated) or only
  the ``generated`` ones;
* ``--vectors``: at layer ``--layer``, the vector from 1 contrast pair against all 4 (``pairs1`` /
  ``pairs4``), and with the reduction ``last`` (the last position of each prompt) instead of the
  mean over positions.

    .venv/bin/python benchmarks/steer_settings.py --out benchmarks/results/steer_settings \
        [--concepts 8 --prompts 4 --seeds 1 --scales 0.3 0.6]

Writes ``results.json`` and ``report.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import platform
from datetime import date
from pathlib import Path

import torch

from tl_diffusion_prior.data import load_default_model
from tl_diffusion_prior.evaluate.concept_steering import (
    PLAIN,
    ConceptRun,
    relative_steering_options,
)
from tl_diffusion_prior.evaluate.concepts import DEFAULT_CONCEPTS, DEFAULT_PROMPTS, chat_prompts
from tl_diffusion_prior.evaluate.stats import bootstrap_ci
from tl_diffusion_prior.steering import mean_activation_norm, steering_vector
from tl_diffusion_prior.steering.config import DEFAULT_NUM_STEPS, DEFAULT_T_START

SAMPLING = {"temperature": 0.7, "top_p": 0.9}


def main() -> None:
    args = parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = load_default_model()
    concepts = DEFAULT_CONCEPTS[: args.concepts]
    requests = DEFAULT_PROMPTS[: args.prompts]
    prompts = chat_prompts(model.tokenizer, requests)
    rows = []
    settings = [("layer", layer, "all", "pairs4") for layer in args.layers]
    settings += [("positions", args.layer, "generated", "pairs4")]
    settings += [("vector", args.layer, "all", kind) for kind in ("pairs1", "last")]
    for sweep, layer, positions, vector_kind in settings:
        hook = f"blocks.{layer}.hook_resid_post"
        run = ConceptRun.prepare(
            model, hook, concepts, prompts, args.max_new_tokens, seeds=range(args.seeds),
            sampling=SAMPLING,
        )  # fmt: skip
        run.vectors = {c.name: build_vector(model, hook, c, vector_kind) for c in concepts}
        norm = mean_activation_norm(
            model, hook, list(requests) + [p for c in concepts for p in c.positive]
        )
        # plain steering: the prior settings are unused, the library's defaults recorded
        options = relative_steering_options(norm, DEFAULT_T_START, DEFAULT_NUM_STEPS, 0)
        options["positions"] = positions
        for scale in args.scales:
            items = run.items_at(scale, None, options)
            rows.append(row(sweep, layer, positions, vector_kind, scale, norm, items))
            summary = {k: v for k, v in rows[-1].items() if k not in ("examples", "items")}
            print(json.dumps(summary), flush=True)
        (out / "results.json").write_text(json.dumps(meta(args, rows), indent=1))
    write_report(out, meta(args, rows))


def build_vector(model, hook: str, concept, kind: str) -> torch.Tensor:
    if kind == "pairs1":
        return steering_vector(model, hook, concept.positive[:1], concept.negative[:1])
    reduce = "last" if kind == "last" else "mean"
    return steering_vector(model, hook, concept.positive, concept.negative, reduce=reduce)


def row(sweep, layer, positions, vector_kind, scale, norm, items) -> dict:
    def ci(values):
        found = bootstrap_ci(torch.tensor(values, dtype=torch.float64), n_resamples=1000)
        return [found.mean, found.low, found.high]

    return {
        "sweep": sweep,
        "layer": layer,
        "positions": positions,
        "vector": vector_kind,
        "r": scale,
        "reference_norm": norm,
        "lift": ci([i.lift for i in items]),
        "lexicon": ci([float(i.lexicon_hits) for i in items]),
        "fluent": ci([float(i.fluent) for i in items]),
        "examples": [i.text for i in items[:: max(1, len(items) // 4)]],
        # Every text with its NLL, so that a later text judge can re-judge the run (the run of
        # 2026-11-30 kept only the examples and could not be).
        "items": [{"text": i.text, "nll": i.nll, "fluent": i.fluent} for i in items],
    }


def meta(args, rows) -> dict:
    return {
        "date": str(date.today()),
        "machine": f"{platform.machine()}, torch threads {torch.get_num_threads()}",
        "method": PLAIN,
        "concepts": args.concepts,
        "prompts": args.prompts,
        "seeds": args.seeds,
        "max_new_tokens": args.max_new_tokens,
        "sampling": SAMPLING,
        "rows": rows,
    }


def write_report(out: Path, results: dict) -> None:
    lines = [
        f"# Plain steering settings ({results['date']}, {results['machine']})",
        "",
        f"`benchmarks/steer_settings.py`: {results['concepts']} concepts x {results['prompts']} "
        f"prompts x {results['seeds']} seed(s), sampled {results['sampling']}, "
        f"{results['max_new_tokens']} tokens, chat template; plain steering; r is relative to the "
        "mean activation norm at each layer. [95% bootstrap intervals over the items.]",
        "",
        "| sweep | layer | positions | vector | r | norm | lift | lexicon words | fluent |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["rows"]:
        cells = [fmt(r[k]) for k in ("lift", "lexicon", "fluent")]
        lines.append(
            f"| {r['sweep']} | {r['layer']} | {r['positions']} | {r['vector']} | {r['r']:g} | "
            f"{r['reference_norm']:.0f} | " + " | ".join(cells) + " |"
        )
    (out / "report.md").write_text("\n".join(lines) + "\n")


def fmt(values) -> str:
    return f"{values[0]:.2f} [{values[1]:.2f}, {values[2]:.2f}]"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--layers", type=int, nargs="+", default=[6, 9, 12, 15, 18, 21, 24])
    parser.add_argument("--layer", type=int, default=15, help="layer of the other sweeps")
    parser.add_argument("--scales", type=float, nargs="+", default=[0.3, 0.6])
    parser.add_argument("--concepts", type=int, default=len(DEFAULT_CONCEPTS))
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="1 concept, 2 prompts, 2 layers")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args = replace_args(args, concepts=1, prompts=2, layers=[9, 15], max_new_tokens=8)
    return args


def replace_args(args: argparse.Namespace, **fields) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(args), **fields})


if __name__ == "__main__":
    main()
