"""The steering benchmark of issue 15: concept vs fluency for plain steering, the priors, an SAE and
PCA, on the default model, at a size that separates them.

Every method steers the same 8 concepts (``evaluate.concepts.DEFAULT_CONCEPTS``: two sentiments,
six topics) on the same 16 held-out prompts with 2 decoding seeds (sampled, temperature 0.7,
top-p 0.9; each seed gives every method the same random numbers), 32 new tokens, at each relative
scale ``r`` (the hook adds ``r`` x the reference norm along the vector's unit direction):

* ``plain steering``: activation addition only;
* ``MLP prior``: the shipped default prior denoises the steered positions (t_start 0.5, 20 steps);
  ``--prior-settings`` adds other settings of the same prior as methods of their own, each
  ``MODE@T``: ``replace@0.5`` is the above, ``edit@0.3`` denoises the edit only
  (``denoise_mode="edit"``: ``h + D(h + delta) - D(h)``, one noise for both terms) from t = 0.3;
* ``UNet prior`` (``--unet DIR``): a saved UNet prior at the same hook, at each of
  ``--unet-settings`` (same ``MODE@T`` form, default the paper's ``replace@0.5``);
* ``SAE`` (``--sae DIR``): the steered positions replaced by an SAE's reconstruction;
* ``PCA``: replaced by their projection on the top-``--pca-k`` principal components of
  ``--pca-rows`` activations captured from the training corpus at the hook.

Scores per continuation (``evaluate.concept_steering``): the concept lift (the unsteered model's
log-probability of the concept's words after the text, minus that after the unsteered text of the
same prompt and seed), the held-out lexicon words in the text, the fraction the text judge calls
fluent (no loops, repeats or junk, and NLL at most 4 nats/token; 5 before 2026-12-01, when
``--rejudge`` re-judged the committed runs), the NLL and distinct-2; means with 95% bootstrap
intervals over the 256 (concept, prompt, seed) items. It also measures how much of the added vector
survives each method at the hook (``survival``: the component of ``P(x + a v) - P(x)`` along ``v``,
over ``a``, on the prompts' activations) and the generation time with and without the prior.

    .venv/bin/python benchmarks/steer_front.py --out benchmarks/results/steer_front \
        [--unet DIR] [--sae DIR] [--quick]

Writes ``results.json``, ``report.md`` (tables, the targets, example generations chosen by a
fixed rule) and ``front.png`` to ``--out``. The shipped prior's weights are loaded with
``dtype="auto"`` (bfloat16 on a CPU with native bf16, as the library does by default);
``--time-only`` times the generation with them in float32 and in bfloat16 instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import random
import time
from datetime import date
from pathlib import Path

import torch

from tl_diffusion_prior.capture import model_device
from tl_diffusion_prior.core.serialization import atomic_write_text
from tl_diffusion_prior.data import load_default_model
from tl_diffusion_prior.evaluate.baselines.base import fit_normalizer, load_baseline
from tl_diffusion_prior.evaluate.baselines.gaussian import GaussianBaseline
from tl_diffusion_prior.evaluate.concept_steering import PLAIN, concept_steering_curves
from tl_diffusion_prior.evaluate.concepts import DEFAULT_CONCEPTS, DEFAULT_PROMPTS, chat_prompts
from tl_diffusion_prior.evaluate.front_comparison import (
    calibrated_scale,
    concept_retention,
    matched_comparisons,
    measure,
)
from tl_diffusion_prior.evaluate.reconstructors import PCAReconstructor, SAEReconstructor
from tl_diffusion_prior.evaluate.stats import bootstrap_ci
from tl_diffusion_prior.evaluate.steering_curves import SteeringPoint
from tl_diffusion_prior.evaluate.text_judge import MAX_FLUENT_NLL, judge_fluency
from tl_diffusion_prior.priors import load_default_prior, load_prior
from tl_diffusion_prior.recipes import capture_corpus
from tl_diffusion_prior.steering import reference_norm_from_prior, steer, steering_vector
from tl_diffusion_prior.steering.config import (
    DEFAULT_DENOISE_MODE,
    DEFAULT_NUM_STEPS,
    DEFAULT_T_START,
    DENOISE_MODES,
)

SAMPLING = {"temperature": 0.7, "top_p": 0.9}


def main() -> None:
    args = parse_args()
    out = Path(args.out)
    if args.report_only:
        write_report(out)
        return
    if args.rejudge:
        rejudge(out)
        return
    out.mkdir(parents=True, exist_ok=True)
    model = load_default_model()
    prior = load_default_prior(device=model_device(model))
    hook = prior.config.hook_name
    norm = reference_norm_from_prior(prior)
    concepts = DEFAULT_CONCEPTS[: args.concepts]
    prompts = DEFAULT_PROMPTS[: args.prompts]
    if args.chat:
        prompts = chat_prompts(model.tokenizer, prompts)
    if args.time_only:
        time_prior_dtypes(args, model, hook, norm, concepts[0], prompts, out)
        return
    methods, method_options = build_methods(args, model, prior, hook)
    seeds = tuple(range(args.seeds))
    items: dict[str, list] = {}
    # A new run: the texts of an earlier run into this folder (stopped or finished) would be
    # appended to and reported twice.
    (out / "items.jsonl").unlink(missing_ok=True)
    start = time.perf_counter()
    curves = concept_steering_curves(
        model,
        hook,
        methods,
        args.scales,
        norm,
        concepts=concepts,
        prompts=prompts,
        max_new_tokens=args.max_new_tokens,
        seeds=seeds,
        sampling=SAMPLING,
        positions=args.positions,
        n_resamples=1000,
        on_items=lambda name, scale, found: keep(items, out, name, scale, found),
        method_options=method_options,
    )
    seconds = time.perf_counter() - start
    results = {
        "date": str(date.today()),
        "machine": f"{platform.machine()}, torch threads {torch.get_num_threads()}",
        "hook": hook,
        "reference_norm": norm,
        "concepts": [c.name for c in concepts],
        "n_prompts": len(prompts),
        "seeds": list(seeds),
        "sampling": SAMPLING,
        "chat_template": args.chat,
        "positions": args.positions,
        "max_new_tokens": args.max_new_tokens,
        "scales": list(args.scales),
        "methods": {
            name: describe(method, method_options.get(name, {})) for name, method in methods.items()
        },
        "curves": curves.to_dict(),
        "items": {key: [dataclasses.asdict(i) for i in found] for key, found in items.items()},
        "survival": survival(
            model, hook, methods, method_options, concepts, prompts, norm, args.scales
        ),
        "generation_seconds": generation_time(
            model, hook, methods, method_options, concepts[0], prompts, norm, args.positions
        ),
        "benchmark_seconds": seconds,
    }
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    print(f"wrote {out / 'results.json'} ({seconds:.0f} s of generation and scoring)")
    write_report(out)


def keep(items: dict, out: Path, method: str, scale: float, found: list) -> None:
    """Record one point's generations, and append them to ``items.jsonl`` so that a stopped run
    keeps what it generated."""
    items[f"{method}|{scale:g}"] = found
    with open(out / "items.jsonl", "a") as f:
        for item in found:
            f.write(
                json.dumps({"method": method, "scale": scale, **dataclasses.asdict(item)}) + "\n"
            )
    fluent = sum(i.fluent for i in found) / len(found)
    print(f"{time.strftime('%H:%M:%S')} {method} r={scale:g}: fluent {fluent:.2f}", flush=True)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--unet", default=None, help="a saved UNet prior at the same hook")
    parser.add_argument(
        "--unet-settings",
        nargs="+",
        default=[(DEFAULT_DENOISE_MODE, DEFAULT_T_START)],
        type=prior_setting,
        help="settings of the UNet prior (with --unet), each a method: MODE@T as above",
    )
    parser.add_argument("--sae", default=None, help="a saved SAE baseline at the same hook")
    parser.add_argument("--pca-k", type=int, default=128, help="0 leaves PCA out")
    parser.add_argument(
        "--prior-settings",
        nargs="+",
        default=["replace@0.5"],
        type=prior_setting,
        help="settings of the MLP prior, each a method: MODE@T with MODE replace (the paper's) or "
        "edit (denoise only the edit) and T the noise level t_start",
    )
    parser.add_argument(
        "--positions",
        choices=["all", "generated"],
        default="all",
        help="the steered positions (every method): the whole prompt and the generated tokens, "
        "or the generated tokens only",
    )
    parser.add_argument("--pca-rows", type=int, default=30000)
    parser.add_argument("--scales", type=float, nargs="+", default=[0.0, 0.3, 0.6, 1.0])
    parser.add_argument("--concepts", type=int, default=len(DEFAULT_CONCEPTS))
    parser.add_argument("--prompts", type=int, default=len(DEFAULT_PROMPTS))
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument(
        "--quick", action="store_true", help="2 concepts x 2 prompts x 1 seed, 8 tokens"
    )
    parser.add_argument(
        "--no-chat",
        dest="chat",
        action="store_false",
        help="continue the bare prompts instead of the instruct model's chat template",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--report-only", action="store_true", help="rewrite the report from --out/results.json"
    )
    parser.add_argument(
        "--rejudge",
        action="store_true",
        help="judge the texts in --out/results.json again with the current text judge (from "
        "their stored NLL; nothing is generated) and rewrite the fluent fractions and the report",
    )
    parser.add_argument(
        "--time-only",
        action="store_true",
        help="only time one batched generation per --prior-settings, with the prior's weights "
        "in float32 and in bfloat16, against plain steering",
    )
    args = parser.parse_args()
    if 0.0 not in args.scales and not (args.report_only or args.rejudge or args.time_only):
        # The report measures every target against the unsteered texts: refuse before generating.
        parser.error(f"--scales must include 0 (the unsteered reference), got {args.scales}")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.concepts, args.prompts, args.seeds, args.max_new_tokens = 2, 2, 1, 8
        args.pca_rows = min(args.pca_rows, 2000)
    return args


def prior_setting(text: str) -> tuple[str, float]:
    """``MODE@T`` -> (denoise mode, t_start)."""
    mode, _, t = text.partition("@")
    if mode not in DENOISE_MODES or not t:
        raise argparse.ArgumentTypeError(
            f"expected MODE@T with MODE in {DENOISE_MODES}, got {text!r}"
        )
    try:
        t_start = float(t)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"T must be a number in (0, 1], got {t!r}") from error
    if not 0.0 < t_start <= 1.0:
        raise argparse.ArgumentTypeError(f"T must be in (0, 1], got {t!r}")
    return mode, t_start


def prior_method_name(mode: str, t_start: float, kind: str = "MLP") -> str:
    """``MLP prior`` for the paper's setting (the name earlier results use), else with it."""
    if (mode, t_start) == (DEFAULT_DENOISE_MODE, DEFAULT_T_START):
        return f"{kind} prior"
    return f"{kind} prior ({mode}, t={t_start:g})"


def build_methods(args: argparse.Namespace, model, prior, hook: str) -> tuple[dict, dict]:
    """Method name -> prior or projection (plain steering is always included), and method name
    -> its ``steer`` options where they differ from the shared ones."""
    methods: dict = {}
    options: dict = {}
    for mode, t_start in args.prior_settings:
        name = prior_method_name(mode, t_start)
        methods[name] = prior
        options[name] = {"denoise_mode": mode, "t_start": t_start}
    if args.unet:
        unet = load_prior(args.unet, device=model_device(model))
        unet.check_compatible(hook_name=hook, d_model=model.cfg.d_model)
        for mode, t_start in args.unet_settings:
            name = prior_method_name(mode, t_start, kind="UNet")
            methods[name] = unet
            options[name] = {"denoise_mode": mode, "t_start": t_start}
    if args.sae:
        sae = SAEReconstructor(load_baseline(args.sae, device=model_device(model)))
        methods["SAE"] = lambda x: sae.reconstruct(x)
        methods["SAE"].setting = {"path": args.sae}
    if args.pca_k == 0:
        return methods, options
    buffer, _, _ = capture_corpus(model, "train", args.pca_rows, ctx=64, hook=hook)
    gaussian = GaussianBaseline.fit(buffer, fit_normalizer(buffer))
    pca = PCAReconstructor(gaussian, args.pca_k)
    methods["PCA"] = lambda x: pca.reconstruct(x)
    methods["PCA"].setting = {"k": args.pca_k, "rows": args.pca_rows}
    return methods, options


def describe(method, options: dict) -> dict:
    if hasattr(method, "config"):
        defaults = {"t_start": DEFAULT_T_START, "num_steps": DEFAULT_NUM_STEPS}
        settings = {**defaults, "denoise_mode": DEFAULT_DENOISE_MODE, **options}
        return {"prior": type(method).__name__, "dtype": str(method.dtype), **settings}
    return dict(getattr(method, "setting", {}))


@torch.no_grad()
def survival(model, hook, methods, method_options, concepts, prompts, norm, scales) -> dict:
    """Per method and scale: the mean component along the unit vector of ``P(x + a v) - P(x)``,
    over ``a`` (1 = the addition survives whole, 0 = erased), on the prompts' activations at the
    hook (first position left out), averaged over concepts. The priors use one fixed noise for
    both terms, so the difference measures the edit, not the noise (it is also exactly what the
    edit mode adds, so both modes of one prior at one t share a value)."""
    tokens = model.to_tokens(list(prompts), padding_side="left")
    _, cache = model.run_with_cache(tokens, names_filter=[hook])
    mask = tokens != model.tokenizer.pad_token_id
    mask[:, 0] = False
    x = cache[hook][mask].float()
    result: dict = {}
    for name, method in methods.items():
        t_start = method_options.get(name, {}).get("t_start", DEFAULT_T_START)
        result[name] = {}
        for scale in scales:
            if scale == 0:
                continue
            kept = []
            for concept in concepts:
                v = steering_vector(model, hook, concept.positive, concept.negative).float()
                unit = v / v.norm()
                added = scale * norm * unit
                moved = project(method, x + added, t_start) - project(method, x, t_start)
                kept.append(float((moved @ unit).mean() / (scale * norm)))
            result[name][f"{scale:g}"] = sum(kept) / len(kept)
    return result


def project(method, x: torch.Tensor, t_start: float = DEFAULT_T_START) -> torch.Tensor:
    if hasattr(method, "denoise"):
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
        return method.denoise(x, t_start, DEFAULT_NUM_STEPS, noise=noise)
    return method(x)


def generation_time(
    model, hook, methods, method_options, concept, prompts, norm, positions: str = "all",
    repeats: int = 3,
) -> dict:  # fmt: skip
    """Seconds for one batched sampled generation of the prompts (32 tokens), plain and with each
    prior setting, interleaved ``repeats`` times on this machine; the medians."""
    vector = steering_vector(model, hook, concept.positive, concept.negative)
    timed = {PLAIN: None} | {n: m for n, m in methods.items() if hasattr(m, "denoise")}
    times: dict[str, list[float]] = {name: [] for name in timed}
    for _ in range(repeats):
        for name, with_prior in timed.items():
            options = method_options.get(name, {})
            torch.manual_seed(0)
            start = time.perf_counter()
            with steer(
                model, hook, vector, 0.5, with_prior, scale_mode="relative", reference_norm=norm,
                seed=0, positions=positions, **options,
            ):  # fmt: skip
                model.generate(
                    list(prompts), max_new_tokens=32, do_sample=True, verbose=False,
                    padding_side="left", **SAMPLING,
                )  # fmt: skip
            times[name].append(time.perf_counter() - start)
    return {name: sorted(values)[len(values) // 2] for name, values in times.items()}


def time_prior_dtypes(args, model, hook, norm, concept, prompts, out: Path) -> None:
    """``--time-only``: the generation time of each ``--prior-settings`` with the shipped prior's
    weights in float32 and in bfloat16, against plain steering, in one interleaved run; written
    to ``generation_time.json``."""
    methods: dict = {}
    options: dict = {}
    for dtype in (torch.float32, torch.bfloat16):
        prior = load_default_prior(device=model_device(model), dtype=dtype)
        for mode, t_start in args.prior_settings:
            name = f"{prior_method_name(mode, t_start)} [{str(dtype).removeprefix('torch.')}]"
            methods[name] = prior
            options[name] = {"denoise_mode": mode, "t_start": t_start}
    seconds = generation_time(model, hook, methods, options, concept, prompts, norm, args.positions)
    record = {
        "date": str(date.today()),
        "machine": f"{platform.machine()}, torch threads {torch.get_num_threads()}",
        "prompts": len(prompts),
        "positions": args.positions,
        "generation_seconds": seconds,
    }
    (out / "generation_time.json").write_text(json.dumps(record, indent=1))
    for name, value in seconds.items():
        print(f"{name}: {value:.1f} s = {value / seconds[PLAIN]:.2f}x plain")


# ------------------------------------------------------------------------------------ report
def rejudge(out: Path) -> None:
    """Judge every kept text again with the current text judge, from its text and its stored NLL
    (nothing is generated), and rewrite the points' fluent fractions, ``items.jsonl`` and the
    report. The intervals are drawn as the run drew them (1,000 resamples, seed 0)."""
    results = json.loads((out / "results.json").read_text())
    for point in results["curves"]["points"]:
        items = results["items"][f"{point['method']}|{point['scale']:g}"]
        for item in items:
            item["fluent"] = judge_fluency(item["text"], item["nll"]).fluent
        fluent = [float(item["fluent"]) for item in items]
        point["extra"]["fluent"] = bootstrap_ci(fluent, n_resamples=1000).to_dict()
    results["judged"] = {"date": str(date.today()), "max_fluent_nll": MAX_FLUENT_NLL}
    lines = [
        json.dumps({"method": key.split("|")[0], "scale": float(key.split("|")[1]), **item})
        for key, items in results["items"].items()
        for item in items
    ]
    atomic_write_text(out / "items.jsonl", "\n".join(lines) + "\n")
    atomic_write_text(out / "results.json", json.dumps(results, indent=1, default=str))
    write_report(out)


def write_report(out: Path) -> None:
    """``report.md`` and ``front.png`` from ``results.json``: the points, the issue's targets,
    and example generations chosen by a fixed rule."""
    results = json.loads((out / "results.json").read_text())
    points = [SteeringPoint.from_dict(p) for p in results["curves"]["points"]]
    methods = list(dict.fromkeys(p.method for p in points))
    lines = [
        f"# Steering benchmark ({results['date']}, {results['machine']})",
        "",
        f"Command: `.venv/bin/python benchmarks/steer_front.py --out {out} ...` (see its "
        f"docstring). Hook `{results['hook']}`, reference norm {results['reference_norm']:.1f}; "
        f"{len(results['concepts'])} concepts x {results['n_prompts']} prompts x "
        f"{len(results['seeds'])} seeds, sampled ({results['sampling']}), "
        f"{results['max_new_tokens']} new tokens, chat template {results['chat_template']}, "
        f"steered positions: {results.get('positions', 'all')}. "
        f"Methods: {results['methods']}.",
        "",
        "Lift: the unsteered model's log-probability of the concept's words after the text, "
        "minus after the unsteered text (nats). Lexicon: held-out concept words per text. "
        "Fluent: fraction the text judge passes. Survival: the fraction of the added vector "
        "left along its direction after the method, at the hook. [95% bootstrap intervals over "
        "the (concept, prompt, seed) items.]",
        "",
        "| method | r | lift | lexicon words | fluent | NLL | distinct-2 | survival |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p in points:
        kept = results["survival"].get(p.method, {}).get(f"{p.scale:g}")
        lines.append(
            f"| {p.method} | {p.scale:g} | {ci(p.concept)} | {ci(p.extra['lexicon_hits'])} | "
            f"{ci(p.extra['fluent'])} | {ci(p.fluency)} | {p.extra['distinct_2'].mean:.2f} | "
            f"{'-' if kept is None else f'{kept:.2f}'} |"
        )
    lines += target_lines(points, methods, results)
    lines += example_lines(out, results)
    (out / "report.md").write_text("\n".join(lines) + "\n")
    plot_front(points, methods, out / "front.png")
    print(f"wrote {out / 'report.md'} and {out / 'front.png'}")


def ci(interval) -> str:
    return f"{interval.mean:.2f} [{interval.low:.2f}, {interval.high:.2f}]"


def target_lines(points, methods, results) -> list[str]:
    unsteered = next(p for p in points if p.method == PLAIN and p.scale == 0)
    fluent0 = unsteered.extra["fluent"].mean
    lines = ["", "## The issue's targets, as measured", ""]
    calibrated = calibrated_scale(points, PLAIN, fluent0)
    lines.append(
        "- Plain steering, calibrated (largest r with the lift interval above 0 and fluent >= "
        f"0.8 x unsteered {fluent0:.2f}): "
        + (
            f"r = {calibrated.scale:g}, lift {ci(calibrated.concept)}, fluent "
            f"{ci(calibrated.extra['fluent'])}: met."
            if calibrated
            else "no scale qualifies: not met."
        )
    )
    for method in methods:
        if method == PLAIN:
            continue
        for concept in ("concept", "lexicon_hits"):
            found = matched_comparisons(points, method, PLAIN, concept=concept)
            verdicts = ", ".join(f"r={c.scale:g}: {c.verdict}" for c in found) or "none in range"
            lines.append(
                f"- {method} vs plain at matched {'lift' if concept == 'concept' else 'lexicon'}"
                f" (fluent fraction): {verdicts}."
            )
        kept = concept_retention(points, method, PLAIN)
        lines.append(
            f"- {method}: lift kept relative to plain at equal r: "
            + ", ".join(f"r={r:g}: {v:.0%}" for r, v in kept.items())
            + "."
        )
    # The first MLP prior setting against every method that is neither plain nor the MLP prior.
    mlp = next((m for m in methods if m.startswith("MLP prior")), None)
    for method in methods:
        if mlp is None or method == PLAIN or method.startswith("MLP prior"):
            continue
        found = matched_comparisons(points, mlp, method)
        verdicts = ", ".join(f"r={c.scale:g}: {c.verdict}" for c in found) or "none in range"
        lines.append(f"- {mlp} vs {method} at matched lift (fluent fraction): {verdicts}.")
    times = results["generation_seconds"]
    for name, seconds in times.items():
        if name != PLAIN:
            lines.append(
                f"- Generation time, {name} / plain (one batch of the prompts, 32 tokens, median "
                f"of 3 interleaved): {seconds:.1f} s / {times[PLAIN]:.1f} s = "
                f"{seconds / times[PLAIN]:.2f}x."
            )
    return lines


def example_lines(out: Path, results) -> list[str]:
    """Generations of one (concept, prompt, seed) for every method and scale. The rule, fixed
    before reading any text: the first concept, and the prompt and seed drawn by
    ``random.Random(0)``."""
    items = [json.loads(line) for line in (out / "items.jsonl").read_text().splitlines()]
    concept = results["concepts"][0]
    rng = random.Random(0)
    prompt_index = rng.randrange(results["n_prompts"])
    seed = rng.choice(results["seeds"])
    lines = [
        "",
        f"## Example generations (concept {concept!r}, prompt {prompt_index}, seed {seed}: the "
        "first concept, prompt and seed drawn by random.Random(0))",
        "",
        "| method | r | fluent | text |",
        "|---|---|---|---|",
    ]
    for item in items:
        if (item["concept"], item["prompt_index"], item["seed"]) == (concept, prompt_index, seed):
            text = item["text"].replace("\n", " / ").replace("|", "\\|")
            lines.append(f"| {item['method']} | {item['scale']:g} | {item['fluent']} | {text} |")
    return lines


def plot_front(points, methods, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, concept, label in (
        (axes[0], "concept", "concept lift (nats)"),
        (axes[1], "lexicon_hits", "held-out concept words per text"),
    ):
        for method in methods:
            own = sorted((p for p in points if p.method == method), key=lambda p: p.scale)
            xs = [measure(p, concept) for p in own]
            ys = [p.extra["fluent"] for p in own]
            ax.errorbar(
                [x.mean for x in xs],
                [y.mean for y in ys],
                xerr=[[x.mean - x.low for x in xs], [x.high - x.mean for x in xs]],
                yerr=[[y.mean - y.low for y in ys], [y.high - y.mean for y in ys]],
                marker="o", capsize=2, label=method,
            )  # fmt: skip
            for p, x, y in zip(own, xs, ys, strict=True):
                ax.annotate(f"{p.scale:g}", (x.mean, y.mean), fontsize=7, xytext=(3, 3),
                            textcoords="offset points")  # fmt: skip
        ax.set_xlabel(label)
        ax.set_ylabel("fraction judged fluent")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("Concept vs fluency (labels: relative scale r; 95% bootstrap intervals)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
