"""``tl-diffusion-prior steer``: unsteered, steered and steered+prior generations side by side.

    tl-diffusion-prior steer --prior runs/mlp --positive "I love weddings" \\
        --negative "I hate weddings" --prompt "Tell me about your weekend." --scale 0.5

The vector is the difference of means at the prior's hook (``steering_vector``); ``--scale`` is
relative: the hook adds ``scale * reference norm`` along the vector's unit direction (the norm from
the prior's normaliser; the raw vector's own norm plays no part), so ``--scale 0.25`` adds a quarter
of a typical activation's length. Both steered generations are greedy with the same added vector;
each is scored by its continuation NLL under the unsteered model, judged fluent or not by the text
judge (``evaluate.text_judge``: the NLL alone rewards looping text), and, with ``--concept``, by the
concept log-probability, with ``--lexicon`` by the held-out concept words found in the text.
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import textwrap

from tl_diffusion_prior.capture import model_device
from tl_diffusion_prior.constants import DEFAULT_MODEL_NAME
from tl_diffusion_prior.data import models
from tl_diffusion_prior.evaluate.text_judge import MAX_FLUENT_NLL
from tl_diffusion_prior.priors import load_prior, resolve_prior_dir
from tl_diffusion_prior.recipes import GenerationComparison, compare_generations
from tl_diffusion_prior.steering import steering_vector
from tl_diffusion_prior.steering.positions import POSITIONS


def add_steer_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``steer`` subcommand's options."""
    parser.add_argument(
        "--prior",
        required=True,
        help="directory of a saved prior, or 'default' for the shipped prior",
    )
    parser.add_argument(
        "--positive", action="append", required=True, help="a prompt with the concept (repeat)"
    )
    parser.add_argument(
        "--negative", action="append", required=True, help="a prompt without it (repeat)"
    )
    parser.add_argument("--prompt", required=True, help="the prompt to continue")
    parser.add_argument(
        "--scale",
        type=float,
        required=True,
        help="r: add r * mean activation norm along the vector's direction",
    )
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0, help="seed of the denoising noise")
    parser.add_argument("--t-start", type=float, default=0.5, help="noise level before denoising")
    parser.add_argument("--num-steps", type=int, default=20, help="prior evaluations per token")
    parser.add_argument("--positions", choices=POSITIONS, default="all")
    parser.add_argument("--concept", help="comma-separated concept words to score, e.g. 'wedding'")
    parser.add_argument(
        "--lexicon", help="comma-separated held-out concept words to count in the generated text"
    )
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


def print_comparison(comparison: GenerationComparison, prompt: str, width: int | None) -> None:
    """Print a :class:`~tl_diffusion_prior.recipes.GenerationComparison` as side-by-side columns."""
    columns = []
    for generation in comparison.generations:
        verdict = (
            "fluent" if generation.fluent else "NOT fluent: " + "; ".join(generation.judge_reasons)
        )
        header = f"{generation.label}: NLL {generation.nll:.3f}, {verdict}"
        if generation.concept_logprob is not None:
            header += f", concept {generation.concept_logprob:.2f}"
        if generation.lexicon_hits is not None:
            header += f", lexicon words {generation.lexicon_hits}"
        columns.append((header, generation.text))
    print(f"prompt: {prompt!r}")
    print(
        f"hook {comparison.hook_name}; |vector| {comparison.vector_norm:.1f}; reference norm "
        f"{comparison.reference_norm:.1f} from {comparison.reference_norm_source}; adds "
        f"{comparison.alpha:.1f} along its direction; positions {comparison.positions}; greedy"
    )
    width = width or shutil.get_terminal_size((120, 20)).columns
    print(format_columns(columns, width))
    print(
        "NLL: mean nats per continuation token under the unsteered model (lower = more fluent, "
        "but looping text scores low too); fluent: no loops, repeated phrases or junk characters "
        f"and NLL at most {MAX_FLUENT_NLL:g}."
    )


def run_steer(args: argparse.Namespace) -> int:
    """Run ``tl-diffusion-prior steer`` with parsed ``args``."""
    # A missing shipped prior fails before the model loads.
    prior_dir = resolve_prior_dir(args.prior)
    model = models.load_model(args.model, device=args.device)
    prior = load_prior(prior_dir, device=model_device(model))
    vector = steering_vector(model, prior.config.hook_name, args.positive, args.negative)
    comparison = compare_generations(
        model,
        prior,
        vector,
        args.prompt,
        args.scale,
        max_new_tokens=args.max_new_tokens,
        t_start=args.t_start,
        num_steps=args.num_steps,
        seed=args.seed,
        positions=args.positions,
        concept_words=_words(args.concept),
        concept_lexicon=_words(args.lexicon),
        norm_prompts=args.positive + args.negative,
    )
    print_comparison(comparison, args.prompt, args.width)
    return 0


def _words(comma_separated: str | None) -> list[str] | None:
    """``"a, b,"`` -> ``["a", "b"]``; None (or nothing but commas) -> None."""
    words = [w.strip() for w in (comma_separated or "").split(",") if w.strip()]
    return words or None
