"""Does a trained prior keep steered generations more fluent than plain steering at the same scale?

Loads a saved prior (by default the MLP prior the demo writes) and runs the evaluation's
concept-vs-fluency sweep (``evaluate.concept_steering``) for plain steering and for the prior at
each ``--t-start``: the concept lift and the continuation NLL under the unsteered model, the
fraction of continuations the text judge calls fluent (the NLL alone rewards looping text) and the
held-out concept words per continuation, averaged over concepts and prompts with 95% bootstrap
intervals. A relative scale ``r`` adds ``r`` times the reference norm along the vector's unit
direction.

    .venv/bin/python benchmarks/steer_fluency.py --prior reports/demo/priors/mlp
"""

from __future__ import annotations

import argparse
import platform
from datetime import date

import torch

from tl_diffusion_prior.data import load_default_model
from tl_diffusion_prior.evaluate.concept_steering import PLAIN, concept_steering_curves
from tl_diffusion_prior.evaluate.concepts import DEFAULT_CONCEPTS, DEFAULT_PROMPTS
from tl_diffusion_prior.priors import load_prior
from tl_diffusion_prior.steering import reference_norm_from_prior


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prior", default="reports/demo/priors/mlp")
    parser.add_argument("--scales", type=float, nargs="+", default=[0.1, 0.25, 0.5, 1.0])
    parser.add_argument("--t-starts", type=float, nargs="+", default=[0.25, 0.5])
    parser.add_argument("--num-steps", type=int, default=20)
    parser.add_argument("--concepts", type=int, default=2)
    parser.add_argument("--prompts", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--device", default=None)
    args = parser.parse_args()

    model = load_default_model(device=args.device)
    prior = load_prior(args.prior, device=next(model.parameters()).device)
    norm = reference_norm_from_prior(prior)
    common = dict(
        concepts=DEFAULT_CONCEPTS[: args.concepts],
        prompts=DEFAULT_PROMPTS[: args.prompts],
        max_new_tokens=args.max_new_tokens,
        num_steps=args.num_steps,
        n_resamples=1000,
    )
    rows = []
    for i, t_start in enumerate(args.t_starts):
        curves = concept_steering_curves(
            model,
            prior.config.hook_name,
            {"prior": prior},
            args.scales,
            norm,
            t_start=t_start,
            **common,
        )
        for p in curves.points:
            if p.method == PLAIN and i > 0:
                continue  # the same greedy generations as in the first sweep
            label = PLAIN if p.method == PLAIN else f"prior, t_start {t_start:g}"
            rows.append((label, p))

    print(
        f"\n{date.today()} | {platform.machine()} | torch threads {torch.get_num_threads()} | "
        f"prior {args.prior} ({prior.config.architecture}); {args.concepts} concepts x "
        f"{args.prompts} prompts, {args.max_new_tokens} greedy tokens, reference norm {norm:.1f}"
    )
    print(
        f"{'method':24s} {'r':>5s} {'concept lift [95% CI]':>26s} {'NLL [95% CI]':>24s} "
        f"{'fluent':>7s} {'lexicon words':>14s}"
    )
    for label, p in sorted(rows, key=lambda row: (row[0], row[1].scale)):
        c, f = p.concept, p.fluency
        print(
            f"{label:24s} {p.scale:5g} {c.mean:8.2f} [{c.low:6.2f}, {c.high:6.2f}]     "
            f"{f.mean:6.2f} [{f.low:5.2f}, {f.high:5.2f}] {p.extra['fluent'].mean:7.2f} "
            f"{p.extra['lexicon_hits'].mean:14.2f}"
        )


if __name__ == "__main__":
    main()
