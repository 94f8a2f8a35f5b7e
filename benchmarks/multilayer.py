"""Issue 17, item 3: one multi-layer prior against one prior per layer, at equal wall-clock.

On the default model, captures the packaged corpus once at every layer of ``--layers`` (one buffer
row holds all of them), then trains

* ``multi``: one GLP prior over all the layers (the layer embedding tells it which one; each layer
  z-scored with its own statistics), for ``--seconds``;
* ``single``: one GLP prior of the same size per layer, each for ``--seconds / len(layers)``,

so both arms spend the same wall-clock on training (steps sized by timing a few steps of each, so
every cosine schedule completes; the trainer's time budget is a safety stop). Both are the same
architecture and recipe (AdamW, warm-up, cosine, EMA, bf16 autocast where the CPU has it); only
the sharing of the network differs. Then, per layer:

* held-out loss over that layer's Gaussian reference (a Gaussian fitted on the training rows,
  scored on the held-out rows; below 1 = learned beyond the covariance);
* delta LM restoration: the held-out windows' activations at the layer get Gaussian noise of std
  ``--noise-std`` in normalised space, the prior restores them (matched-t, 20 Euler steps), the
  rest of the model runs on the result; the mean cross-entropy increase over the clean model, with
  the noisy input left alone as the reference and the paired multi - single difference with a
  bootstrap interval over documents.

Writes a markdown report to ``--out``. Not a test: nothing asserts who wins. The full run takes
about an hour on a 2-core CPU (capture of 208k rows x 4 layers ~5-12 min, training 2 x 20 min,
evaluation ~5 min; ~3 GB of memory); ``--quick`` about 2 minutes on one busy CPU thread.

    .venv/bin/python benchmarks/multilayer.py --out benchmarks/results/multilayer.md
    .venv/bin/python benchmarks/multilayer.py --quick --out /tmp/multilayer_quick.md
"""

from __future__ import annotations

import argparse
import platform
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import torch
from benchmark_setup import add_data_arguments

from tl_diffusion_prior.core.normalizer import Normalizer
from tl_diffusion_prior.data import load_default_model
from tl_diffusion_prior.evaluate.data import heldout_documents, texts_of
from tl_diffusion_prior.evaluate.fidelity import (
    Condition,
    FidelityResult,
    evaluate_reconstructor,
    prepare_clean_pass,
    token_windows,
)
from tl_diffusion_prior.evaluate.reconstructors import IdentityReconstructor, PriorReconstructor
from tl_diffusion_prior.evaluate.stats import bootstrap_ci
from tl_diffusion_prior.priors import DiffusionPrior, glp_prior_for_hooks
from tl_diffusion_prior.recipes import PRIOR_PRESETS, calibrate_steps, capture_corpus
from tl_diffusion_prior.training import FIT_ROWS, TrainConfig, TrainResult, train_prior
from tl_diffusion_prior.training.multi_layer import layer_views
from tl_diffusion_prior.training.validation import LayerScore, per_layer_scores

QUICK = dict(n_train=4_000, n_val=1_000, ctx=64, seconds=16.0, batch_size=128, windows=4)


@dataclass
class Arm:
    """One side of the comparison: its priors (one per layer, views for ``multi``) and runs."""

    name: str
    priors: list[DiffusionPrior]
    results: list[TrainResult]
    scores: list[LayerScore] | None = None


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, nargs="+", default=[9, 12, 15, 18])
    parser.add_argument("--seconds", type=float, default=1200.0, help="multi prior's training")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--depth", type=int, default=3, help="blocks of every prior")
    parser.add_argument("--ctx", type=int, default=128, help="tokens per captured sequence")
    parser.add_argument("--noise-std", type=float, default=1.0, help="restoration noise")
    parser.add_argument("--windows", type=int, default=32, help="held-out delta-LM windows")
    parser.add_argument("--seq-len", type=int, default=128, help="tokens per delta-LM window")
    parser.add_argument("--quick", action="store_true", help="smoke-test sizes (~2 min, 1 CPU)")
    parser.add_argument("--out", type=Path, required=True, help="markdown report to write")
    add_data_arguments(parser, n_train=200_000, n_val=8_000)
    args = parser.parse_args()
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
        args.seq_len, args.depth = 64, 1
    if len(args.layers) < 2:
        parser.error("--layers needs two or more layers for a multi-layer prior.")
    return args


def train_arm(name, priors, hook_sets, buffer, val_rows, seconds_each, args) -> Arm:
    """Train each prior on its buffer hooks for ``seconds_each`` (steps timed beforehand)."""
    lr = PRIOR_PRESETS["mlp"]["cpu"]["lr"]  # the GLP network is the MLP prior's network
    results = []
    for prior, hooks in zip(priors, hook_sets, strict=True):
        index = hooks[0] if len(hooks) == 1 else tuple(hooks)
        steps = calibrate_steps(prior, buffer, args.batch_size, seconds_each, hook=index)
        config = TrainConfig(
            steps=steps,
            batch_size=args.batch_size,
            lr=lr,
            eval_every=max(1, steps // 4),
            log_every=max(1, steps // 20),
            val_size=min(val_rows.shape[0], 4096),
            time_budget_s=1.5 * seconds_each,  # a safety stop; the timed steps should fit
            progress=False,
        )
        hook_arg = buffer.hook_names[index] if isinstance(index, int) else None
        val = val_rows[:, list(hooks)] if len(hooks) > 1 else val_rows[:, index]
        result = train_prior(prior, buffer, config, val_activations=val, hook=hook_arg)
        print(
            f"{name} {prior.config.hook_name}: {result.steps} steps in {result.elapsed_s:.0f} s, "
            f"val/ref {result.val_over_reference:.3f}"
        )
        results.append(result)
    return Arm(name, priors, results)


def restoration(model, args, hooks, buffer, arms) -> tuple[dict, torch.Tensor]:
    """Per hook, the :class:`FidelityResult` of the noisy input left alone and of each arm's
    restoration; and the windows' document ids (for paired intervals)."""
    texts = texts_of(heldout_documents())
    token_set = token_windows(model, texts, "heldout", args.seq_len, max_windows=args.windows)
    condition = Condition(kind="noise", noise_std=args.noise_std)
    out: dict[str, dict[str, FidelityResult]] = {}
    for i, hook in enumerate(hooks):
        clean = prepare_clean_pass(model, token_set, hook)
        normalizer = Normalizer(model.cfg.d_model)  # the noise's space: the training rows'
        normalizer.set_stats(buffer.mean(i), buffer.var(i))
        methods = {"noisy input": IdentityReconstructor()}
        methods.update({arm.name: PriorReconstructor(arm.priors[i]) for arm in arms})
        out[hook] = {
            name: evaluate_reconstructor(model, clean, method, normalizer, condition)
            for name, method in methods.items()
        }
        print(hook, {k: round(v.delta_lm.mean, 4) for k, v in out[hook].items()})
    return out, token_set.doc_ids


def _ci(values, groups) -> str:
    ci = bootstrap_ci(values, groups=groups)
    return f"{ci.mean:+.4f} [{ci.low:+.4f}, {ci.high:+.4f}]"


def report(args, hooks, arms, fidelity, timings, doc_ids) -> str:
    multi, single = arms
    lines = [
        "# One multi-layer prior vs one prior per layer (issue 17)",
        "",
        f"{date.today()}, {platform.machine()}, {torch.get_num_threads()} threads, torch "
        f"{torch.__version__}; "
        + (
            "--quick smoke-test sizes: the numbers show the script runs, nothing more."
            if args.quick
            else "full run."
        ),
        "",
        f"Layers {args.layers} (hooks {', '.join(hooks)}); {args.n_train:,} training and "
        f"{args.n_val:,} held-out rows per layer (ctx {args.ctx}); GLP priors of depth "
        f"{args.depth}, width 2 d_model; batch {args.batch_size}. Capture {timings['capture']:.0f} "
        f"s, training {timings['train']:.0f} s, evaluation {timings['eval']:.0f} s.",
        "",
        f"Training wall-clock: multi {multi.results[0].elapsed_s:.0f} s for all layers; single "
        f"{sum(r.elapsed_s for r in single.results):.0f} s in total "
        f"({args.seconds / len(hooks):.0f} s budget each).",
        "",
        "## Held-out loss / each layer's Gaussian reference (below 1 beats every Gaussian)",
        "",
        "| hook | reference | multi loss | multi ratio | single loss | single ratio | single "
        "steps |",
        "|---|---|---|---|---|---|---|",
    ]
    for m, s, r in zip(multi.scores, single.scores, single.results, strict=True):
        lines.append(
            f"| {m.hook_name} | {m.gaussian_reference:.4f} | {m.val_loss:.4f} | {m.ratio:.3f} | "
            f"{s.val_loss:.4f} | {s.ratio:.3f} | {r.steps} |"
        )
    mean_ratio = [sum(x.ratio for x in arm.scores) / len(hooks) for arm in arms]
    lines += [
        f"| mean | | | {mean_ratio[0]:.3f} | | {mean_ratio[1]:.3f} | |",
        "",
        f"Multi prior: {multi.results[0].steps} steps of {args.batch_size} rows (one layer "
        "drawn per row).",
        "",
        f"## Delta LM restoration from noise std {args.noise_std:g} (normalised space), "
        f"{args.windows} held-out windows of {args.seq_len} tokens",
        "",
        "| hook | noisy input | multi | single | multi - single [95% CI] |",
        "|---|---|---|---|---|",
    ]
    for hook in hooks:
        row = fidelity[hook]
        diff = row["multi"].window_deltas - row["single"].window_deltas
        lines.append(
            f"| {hook} | {row['noisy input'].delta_lm.mean:.4f} | {row['multi'].delta_lm.mean:.4f}"
            f" | {row['single'].delta_lm.mean:.4f} | {_ci(diff, doc_ids)} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    args = parse_args()
    started = time.perf_counter()
    model = load_default_model(device=args.device)
    hooks = [f"blocks.{layer}.hook_resid_post" for layer in args.layers]
    buffer, _, _ = capture_corpus(model, "train", args.n_train, args.ctx, hooks)
    val_buffer, _, _ = capture_corpus(model, "heldout", args.n_val, args.ctx, hooks)
    val_rows = val_buffer.filled_rows().float()
    timings = {"capture": time.perf_counter() - started}
    common = dict(d_model=model.cfg.d_model, model_name=model.cfg.model_name, depth=args.depth)
    multi_prior = glp_prior_for_hooks(hooks, n_model_layers=model.cfg.n_layers, **common)
    singles = [glp_prior_for_hooks([hook], **common) for hook in hooks]
    n = len(hooks)
    started = time.perf_counter()
    multi = train_arm(
        "multi", [multi_prior], [list(range(n))], buffer, val_rows, args.seconds, args
    )
    single = train_arm(
        "single", singles, [[i] for i in range(n)], buffer, val_rows, args.seconds / n, args
    )
    timings["train"] = time.perf_counter() - started
    started = time.perf_counter()
    multi.priors = layer_views(multi_prior, n)
    generator = torch.Generator(device=buffer.device).manual_seed(0)
    fit_rows = buffer.sample(min(buffer.num_filled, FIT_ROWS), generator, hook=list(range(n)))
    scoring = TrainConfig(batch_size=1024, seed=0, progress=False)
    for arm in (multi, single):
        arm.scores = per_layer_scores(arm.priors, val_rows, fit_rows, scoring)
    fidelity, doc_ids = restoration(model, args, hooks, buffer, (multi, single))
    timings["eval"] = time.perf_counter() - started
    text = report(args, hooks, (multi, single), fidelity, timings, doc_ids)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
