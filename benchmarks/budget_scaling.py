"""How the benchmark ratios move with the training budget: one full run per budget, same data.

Captures SmolLM2 layer-15 activations once and fits the baselines once; then, for each budget,
trains a fresh prior (the demo's design and optimiser, steps calibrated to the budget, a complete
warm-up + cosine schedule each time) and evaluates it with the demo's settings on the same
held-out windows. Prints and saves, per budget: the validation loss over the Gaussian reference
and targets (a) restoration, (b) reconstruction vs the SAE and (c) FD / floor; plots them against
the budget (log-log) in ``--out/budget_scaling.png``. Not a test: nothing asserts a number.

    .venv/bin/python benchmarks/budget_scaling.py --budgets 30 60 120 240 --out reports/scaling
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from dataclasses import replace
from datetime import date
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from benchmark_setup import add_data_arguments, model_and_activations  # noqa: E402

from tl_diffusion_prior.constants import DEFAULT_HOOK  # noqa: E402
from tl_diffusion_prior.evaluate.plan import fit_baselines  # noqa: E402
from tl_diffusion_prior.evaluate.report import run_evaluation  # noqa: E402
from tl_diffusion_prior.recipes import (  # noqa: E402
    build_priors,
    calibrate_steps,
    demo_eval_settings,
    train_demo_prior,
)

RATIOS = {
    "val / Gaussian ref": lambda row: row["val_over_reference"],
    "(a) restoration / best baseline": lambda row: row["a"],
    "(b) reconstruction / SAE": lambda row: row["b"],
    "(c) FD / floor": lambda row: row["c"],
}


def _ratio(targets: dict, key: str) -> float | None:
    entry = targets.get(key) or {}
    return entry.get("ratio")


def _fd_ratio(targets: dict, name: str) -> float | None:
    entry = targets.get("c_frechet", {})
    row = entry.get(f"{name} samples") or entry.get(name)
    return None if row is None else row["normalized_ratio"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prior", default="mlp", choices=["mlp", "unet"])
    parser.add_argument("--budgets", type=float, nargs="+", default=[30.0, 60.0, 120.0, 240.0])
    parser.add_argument("--eval-sequences", type=int, default=16)
    parser.add_argument("--out", default="reports/budget_scaling")
    add_data_arguments(parser, n_train=120_000, n_val=8_000)
    args = parser.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model, scale, buffer, val_acts = model_and_activations(args, eval_sequences=args.eval_sequences)
    settings = replace(demo_eval_settings(scale), steer_curve_scales=())
    baselines = fit_baselines(
        buffer,
        settings,
        norm_eps=1e-5,
        hook_name=DEFAULT_HOOK,
        model_name=model.cfg.model_name,
    )

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for budget in sorted(args.budgets):
            prior = build_priors(model)[args.prior]
            run_dir = Path(tmp) / f"{budget:g}"
            started = time.perf_counter()
            steps = calibrate_steps(prior, buffer, scale.batch_size, budget)
            result = train_demo_prior(args.prior, prior, buffer, val_acts, scale, run_dir, steps)
            train_s = time.perf_counter() - started
            report = run_evaluation(
                model, [prior], buffer, settings, prior_names=[args.prior], baselines=baselines
            )
            targets = report.targets
            rows.append(
                {
                    "budget_s": budget,
                    "train_s": round(train_s, 1),
                    "steps": result.steps,
                    "samples": result.samples_seen,
                    "val_over_reference": result.val_over_reference,
                    "a": _ratio(targets, "a_restoration_heldout"),
                    "a_ood_vs_noise": _ratio(targets, "a_restoration_pydoc_vs_noise"),
                    "b": _ratio(targets, "b_reconstruction_vs_sae"),
                    "c": _fd_ratio(targets, args.prior),
                }
            )
            print(json.dumps(rows[-1]), flush=True)

    header = (
        f"{date.today()} | {platform.machine()} | torch threads {torch.get_num_threads()} | "
        f"{args.prior} prior, {buffer.num_filled:,} activations, "
        f"{args.eval_sequences} held-out windows per set"
    )
    print("\n" + header)
    print(
        f"{'budget s':>8s} {'samples':>9s} {'val/ref':>8s} {'(a)':>7s} {'(a) ood':>8s} "
        f"{'(b)':>7s} {'(c)':>7s}"
    )

    def fmt(value, width=7):
        return f"{value:{width}.3f}" if value is not None else " " * (width - 3) + "n/a"

    for row in rows:
        print(
            f"{row['budget_s']:8.0f} {row['samples']:9,d} {fmt(row['val_over_reference'], 8)} "
            f"{fmt(row['a'])} {fmt(row['a_ood_vs_noise'], 8)} {fmt(row['b'])} {fmt(row['c'])}"
        )
    (out / "budget_scaling.json").write_text(json.dumps({"header": header, "rows": rows}, indent=2))

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for label, get in RATIOS.items():
        points = [(row["samples"], get(row)) for row in rows if get(row) is not None]
        if points:
            ax.plot(*zip(*points, strict=True), "o-", label=label)
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.axhline(0.26, color="grey", lw=0.8, ls="--", label="targets (a), (b): 0.26")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training samples seen")
    ax.set_ylabel("ratio (lower is better)")
    ax.set_title(f"{args.prior} prior: benchmark ratios vs training budget", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "budget_scaling.png", dpi=120)
    print(f"wrote {out / 'budget_scaling.json'} and {out / 'budget_scaling.png'}")


if __name__ == "__main__":
    main()
