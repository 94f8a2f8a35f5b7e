"""``tl-diffusion-prior steer``: unsteered, steered and steered+prior generations side by side.

    tl-diffusion-prior steer --prior runs/mlp --positive "I love weddings" \\
        --negative "I hate weddings" --prompt "Tell me about your weekend." --scale 0.5

The vector is the difference of means at the prior's hook (``steering_vector``); ``--scale`` is
relative (``alpha = scale * reference norm``, the norm taken from the prior's normaliser). All three
generations are greedy with the same ``alpha``; each is scored by its continuation NLL under the
unsteered model (and, with ``--concept``, the concept log-probability).
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import textwrap

from tl_diffusion_prior.constants import DEFAULT_MODEL_NAME
from tl_diffusion_prior.steering_positions import POSITIONS


def add_steer_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``steer`` subcommand's options."""
    parser.add_argument("--prior", required=True, help="directory of a saved prior")
    parser.add_argument(
        "--positive", action="append", required=True, help="a prompt with the concept (repeat)"
    )
    parser.add_argument(
        "--negative", action="append", required=True, help="a prompt without it (repeat)"
    )
    parser.add_argument("--prompt", required=True, help="the prompt to continue")
    parser.add_argument(
        "--scale", type=float, required=True, help="r in alpha = r * mean activation norm"
    )
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0, help="seed of the denoising noise")
    parser.add_argument("--t-start", type=float, default=0.5, help="noise level before denoising")
    parser.add_argument("--num-steps", type=int, default=20, help="prior evaluations per token")
    parser.add_argument("--positions", choices=POSITIONS, default="all")
    parser.add_argument("--concept", help="comma-separated concept words to score, e.g. 'wedding'")
    parser.add_argument("--model", default=DEFAULT_MODEL_NAME, help="TransformerLens model name")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: the model's)")
    parser.add_argument("--width", type=int, default=None, help="output width (default: terminal)")


def format_columns(columns: list[tuple[str, str]], width: int) -> str:
    """``(header, body)`` pairs as wrapped side-by-side columns; stacked when too narrow."""
    gap = " | "
    column_width = (width - len(gap) * (len(columns) - 1)) // len(columns)
    if column_width < 20:
        return "\n\n".join(f"== {header} ==\n{body}" for header, body in columns)
    headers = [textwrap.wrap(header, column_width) or [""] for header, _ in columns]
    header_lines = max(len(lines) for lines in headers)
    wrapped = []
    for lines, (_, body) in zip(headers, columns, strict=True):
        lines = lines + [""] * (header_lines - len(lines)) + ["-" * column_width]
        for paragraph in body.splitlines() or [""]:
            lines += textwrap.wrap(paragraph, column_width) or [""]
        wrapped.append(lines)
    rows = itertools.zip_longest(*wrapped, fillvalue="")
    return "\n".join(gap.join(cell.ljust(column_width) for cell in row).rstrip() for row in rows)


def run_steer(args: argparse.Namespace) -> int:
    import torch

    from tl_diffusion_prior.evaluate.fluency import (
        concept_token_ids,
        mask_after_eos,
        score_continuations,
    )
    from tl_diffusion_prior.offline_model import load_model
    from tl_diffusion_prior.priors import load_prior
    from tl_diffusion_prior.steer import reference_norm_from_prior, steer
    from tl_diffusion_prior.steering_vector import mean_activation_norm, steering_vector

    model = load_model(args.model, device=args.device)
    device = next(model.parameters()).device
    prior = load_prior(args.prior, device=device)
    hook_name = prior.config.hook_name
    prior.check_compatible(
        hook_name=hook_name, d_model=model.cfg.d_model, model_name=model.cfg.model_name
    )
    vector = steering_vector(model, hook_name, args.positive, args.negative)
    if prior.normalizer.is_fitted:
        norm, norm_source = reference_norm_from_prior(prior), "prior's normaliser (RMS norm)"
    else:
        norm = mean_activation_norm(model, hook_name, args.positive + args.negative)
        norm_source = "the positive and negative prompts"
    tokens = model.to_tokens(args.prompt)
    n_prompt = tokens.shape[1]
    eos = model.tokenizer.eos_token_id

    def generate() -> torch.Tensor:
        out = model.generate(
            tokens, max_new_tokens=args.max_new_tokens, do_sample=False, verbose=False
        )
        return out[:, n_prompt:]

    common = dict(scale_mode="relative", reference_norm=norm, positions=args.positions)
    runs = [("unsteered", generate())]
    with steer(model, hook_name, vector, args.scale, **common):
        runs.append((f"steered (r={args.scale:g})", generate()))
    with steer(
        model,
        hook_name,
        vector,
        args.scale,
        prior,
        t_start=args.t_start,
        num_steps=args.num_steps,
        seed=args.seed,
        **common,
    ):
        runs.append((f"steered + prior (t={args.t_start:g}, {args.num_steps} steps)", generate()))

    concept_ids = (
        concept_token_ids(model, [w for w in args.concept.split(",") if w.strip()])
        if args.concept
        else None
    )
    columns = []
    for label, continuation in runs:
        counted = mask_after_eos(continuation, eos) if eos is not None else None
        scores = score_continuations(
            model, tokens, continuation, concept_ids=concept_ids, continuation_mask=counted
        )
        header = f"{label}: NLL {scores.nll.item():.3f}"
        if scores.concept_logprob is not None:
            header += f", concept {scores.concept_logprob.item():.2f}"
        text = model.tokenizer.decode(continuation[0], skip_special_tokens=True)
        columns.append((header, text))
    print(f"prompt: {args.prompt!r}")
    print(
        f"hook {hook_name}; |vector| {vector.float().norm():.1f}; reference norm {norm:.1f} from "
        f"{norm_source}; alpha {args.scale * norm:.1f}; positions {args.positions}; greedy"
    )
    width = args.width or shutil.get_terminal_size((120, 20)).columns
    print(format_columns(columns, width))
    print("NLL: mean nats per continuation token under the unsteered model (lower = more fluent).")
    return 0
