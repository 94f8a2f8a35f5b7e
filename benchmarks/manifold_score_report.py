"""The fluency part, the AUROC plot and the markdown report of ``manifold_score.py``."""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from tl_diffusion_prior.evaluate.auroc import auroc
from tl_diffusion_prior.evaluate.fluency import score_continuations
from tl_diffusion_prior.evaluate.text_judge import judge_fluency
from tl_diffusion_prior.steering import monitor, reference_norm_from_prior, steer, steering_vector
from tl_diffusion_prior.steering.monitor import SCORE_HOOK

_QUICK = "**QUICK RUN (a smoke test; the sizes are too small to conclude anything).**"


def _mean_score(model, tokens, score_name: str, first: int) -> float:
    """Mean score of the positions from ``first`` on, under whatever is attached to ``model``."""
    with torch.inference_mode():
        _, cache = model.run_with_cache(tokens, names_filter=[score_name])
    values = cache[score_name][0, first:]
    values = values[~values.isnan()]
    return float(values.mean()) if values.numel() else math.nan


def _one_generation(model, prior, hook, args, vector, norm, tokens, scale) -> dict:
    """Greedy continuation under plain steering at relative ``scale``; its mean score as
    steered (the monitor inside the steering) and as re-read by the unsteered model, its NLL
    under the unsteered model and the text judge's verdict."""
    n_prompt = tokens.shape[1]
    score_name = f"{hook}.{SCORE_HOOK}"
    common = dict(scale_mode="relative", reference_norm=norm)
    with steer(model, hook, vector, scale, **common):
        out = model.generate(
            tokens, max_new_tokens=args.max_new_tokens, do_sample=False, verbose=False
        )
        eos = model.tokenizer.eos_token_id
        continuation = out[:, n_prompt:]
        if eos is not None and (continuation[0] == eos).any():
            continuation = continuation[:, : int((continuation[0] == eos).nonzero()[0])]
        if continuation.shape[1] == 0:
            return {"scale": scale, "text": "", "empty": True}
        full = torch.cat([tokens, continuation], dim=1)
        with monitor(model, hook, prior, args.method):
            steered_score = _mean_score(model, full, score_name, n_prompt)
    with monitor(model, hook, prior, args.method):
        reread_score = _mean_score(model, full, score_name, n_prompt)
    nll = float(score_continuations(model, tokens, continuation).nll[0])
    text = model.tokenizer.decode(continuation[0], skip_special_tokens=True)
    judgement = judge_fluency(text, nll)
    return {
        "scale": scale,
        "text": text,
        "empty": False,
        "steered_score": steered_score,
        "reread_score": reread_score,
        "nll": nll,
        "fluent": judgement.fluent,
        "reasons": list(judgement.reasons),
    }


def fluency_rows(model, prior, hook, args, chat_prompt, concepts, prompts) -> dict:
    """Generations over concepts x prompts x ``args.fluency_scales`` and how their score relates
    to their fluency: Spearman correlation with the NLL, AUROC for "judged not fluent"."""
    norm = reference_norm_from_prior(prior)
    items = []
    for concept in concepts[: args.fluency_concepts]:
        vector = steering_vector(model, hook, concept.positive, concept.negative)
        for prompt in prompts[: args.fluency_prompts]:
            tokens = model.to_tokens(chat_prompt(model, prompt))
            for scale in args.fluency_scales:
                item = _one_generation(model, prior, hook, args, vector, norm, tokens, scale)
                items.append({"concept": concept.name, "prompt": prompt, **item})
        print(f"{time.strftime('%H:%M:%S')} fluency: {concept.name} done", flush=True)
    kept = [i for i in items if not i["empty"] and math.isfinite(i["steered_score"])]
    summary: dict = {"n_generations": len(items), "n_scored": len(kept)}
    for key in ("steered_score", "reread_score"):
        values = torch.tensor([i[key] for i in kept], dtype=torch.float64)
        nll = torch.tensor([i["nll"] for i in kept], dtype=torch.float64)
        summary[f"spearman_{key}_nll"] = spearman(values, nll) if len(kept) > 2 else math.nan
        not_fluent = torch.tensor([not i["fluent"] for i in kept])
        both = 0 < int(not_fluent.sum()) < len(kept)
        summary[f"auroc_{key}_not_fluent"] = auroc(values, not_fluent) if both else math.nan
    summary["n_not_fluent"] = sum(not i["fluent"] for i in kept)
    return {"items": items, "summary": summary}


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman's rank correlation (ties broken by order: the scores are continuous)."""
    ra = a.argsort().argsort().double()
    rb = b.argsort().argsort().double()
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()).clamp_min(1e-300))


def plot_aurocs(table, kinds: dict, path: Path) -> None:
    """One row per shift, one marker per scorer, with the bootstrap interval as error bar."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    shifts = list(dict.fromkeys(r.shift for r in table))
    scorers = list(dict.fromkeys(r.scorer for r in table))
    fig = Figure(figsize=(8, 0.45 * len(shifts) + 1.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for k, scorer in enumerate(scorers):
        rows = [next(r for r in table if r.shift == s and r.scorer == scorer) for s in shifts]
        y = [i + (k - (len(scorers) - 1) / 2) * 0.18 for i in range(len(shifts))]
        mean = [r.auroc.mean for r in rows]
        err = [
            [m - r.auroc.low for m, r in zip(mean, rows, strict=True)],
            [r.auroc.high - m for m, r in zip(mean, rows, strict=True)],
        ]
        ax.errorbar(mean, y, xerr=err, fmt="o", capsize=2, label=scorer)
    ax.set_yticks(range(len(shifts)), [f"{s} ({kinds[s]})" for s in shifts])
    ax.axvline(0.5, color="grey", linewidth=0.8, linestyle=":")
    ax.set_xlabel("AUROC, shifted vs clean (95 % bootstrap interval over documents)")
    ax.invert_yaxis()
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=110)


def _verdicts(results: dict) -> list[str]:
    """Per kind of shift: on how many shifts the prior's interval lies above every baseline's."""
    table = results["aurocs"]
    prior_name = next(r["scorer"] for r in table if r["scorer"].startswith("prior"))
    lines = []
    for kind in ("steered", "noised", "domain"):
        shifts = [s for s, k in results["shift_kinds"].items() if k == kind]
        wins, best_any = 0, 0
        for shift in shifts:
            rows = {r["scorer"]: r["auroc"] for r in table if r["shift"] == shift}
            ours = rows.pop(prior_name)
            if all(ours["low"] > other["high"] for other in rows.values()):
                wins += 1
            if all(ours["mean"] >= other["mean"] for other in rows.values()):
                best_any += 1
        lines.append(
            f"- {kind}: the prior's AUROC is the highest on {best_any} of {len(shifts)} shifts, "
            f"with an interval above every baseline's on {wins}."
        )
    return lines


def write_report(results: dict, path: Path) -> None:
    """The markdown report: setup, AUROC table, verdicts, cost, fluency, token plots."""
    args = results["args"]
    table = results["aurocs"]
    scorers = list(dict.fromkeys(r["scorer"] for r in table))
    shifts = list(dict.fromkeys(r["shift"] for r in table))
    lines = [
        "# Manifold score against baselines (issue 18, item 3)",
        "",
        f"{_QUICK if args['quick'] else 'Full run.'} {results['date']}, {results['machine']}, "
        f"{results['wall_seconds']:.0f} s.",
        "",
        f"Hook `{results['hook']}`; {results['n_clean_rows']} clean held-out tokens from "
        f"{results['n_clean_docs']} documents ({args['tokens_per_doc']} tokens each at most); "
        f"baselines fitted on {results['n_train_rows']} training-split tokens. Steering along "
        f"`{args['concept']}` (relative scale r: r x reference norm x unit vector added at the "
        "hook); noise in units of each dimension's std. AUROC: shifted = positive; 95 % "
        f"bootstrap over documents ({args['n_resamples']} resamples).",
        "",
        "| shift | rows | " + " | ".join(scorers) + " |",
        "|---|---|" + "---|" * len(scorers),
    ]
    for shift in shifts:
        cells = []
        for scorer in scorers:
            a = next(r["auroc"] for r in table if r["shift"] == shift and r["scorer"] == scorer)
            cells.append(f"{a['mean']:.3f} [{a['low']:.3f}, {a['high']:.3f}]")
        lines.append(f"| {shift} | {results['shift_rows'][shift]} | " + " | ".join(cells) + " |")
    lines += ["", *_verdicts(results), "", "Cost (ms per 1000 rows, this machine):", ""]
    lines += [f"- {name}: {ms:.0f}" for name, ms in results["ms_per_1000_rows"].items()]
    lines += ["", "![AUROCs](aurocs.png)", "", *_fluency_lines(results["fluency"])]
    lines += ["", "Per-token scores:", ""]
    lines += [f"- {t['text']!r}: {t['summary']}" for t in results["token_plots"]]
    lines += ["", "![per-token scores](token_scores.png)", ""]
    path.write_text("\n".join(lines))


def _fluency_lines(fluency: dict) -> list[str]:
    s = fluency["summary"]
    lines = [
        "## Score of steered generations and their fluency",
        "",
        f"{s['n_generations']} greedy generations ({s['n_scored']} non-empty), "
        f"{s['n_not_fluent']} judged not fluent.",
        f"Spearman(score, NLL): steered activations {s['spearman_steered_score_nll']:.3f}, "
        f"re-read unsteered {s['spearman_reread_score_nll']:.3f}. AUROC of the score for "
        f"'not fluent': steered {s['auroc_steered_score_not_fluent']:.3f}, re-read "
        f"{s['auroc_reread_score_not_fluent']:.3f} (NaN when one class is missing).",
        "",
        "| concept | r | steered score | re-read score | NLL | fluent | text |",
        "|---|---|---|---|---|---|---|",
    ]
    for item in fluency["items"]:
        if item["empty"]:
            continue
        text = item["text"].replace("\n", " ").replace("|", "/")[:70]
        lines.append(
            f"| {item['concept']} | {item['scale']:g} | {item['steered_score']:.3f} | "
            f"{item['reread_score']:.3f} | {item['nll']:.2f} | {item['fluent']} | {text} |"
        )
    return lines
