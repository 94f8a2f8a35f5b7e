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

import torch

from tl_diffusion_prior.capture import model_device
from tl_diffusion_prior.cli import common
from tl_diffusion_prior.constants import DEFAULT_MODEL_NAME
from tl_diffusion_prior.core.precision import AUTO_DTYPE, resolve_auto_dtype
from tl_diffusion_prior.data import models
from tl_diffusion_prior.evaluate.concepts import SteeringConcept
from tl_diffusion_prior.evaluate.scale_calibration import (
    DEFAULT_CALIBRATION_SCALES,
    calibrate_scale,
)
from tl_diffusion_prior.evaluate.text_judge import MAX_FLUENT_NLL
from tl_diffusion_prior.priors import DiffusionPrior, load_prior, resolve_prior_dir
from tl_diffusion_prior.recipes import GenerationComparison, compare_generations
from tl_diffusion_prior.steering import reference_norm_from_prior, steering_vector
from tl_diffusion_prior.steering.config import (
    DEFAULT_DENOISE_MODE,
    DEFAULT_NUM_STEPS,
    DEFAULT_T_START,
    DENOISE_MODES,
)
from tl_diffusion_prior.steering.positions import POSITIONS


def add_steer_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``steer`` subcommand's options."""
    parser.add_argument(
        "--prior",
        required=True,
        help="directory of a saved prior, 'default' for the shipped prior, or a Hugging Face Hub "
        "name org/name[@revision] (our format or the paper's release)",
    )
    parser.add_argument(
        "--positive", action="append", required=True, help="a prompt with the concept (repeat)"
    )
    parser.add_argument(
        "--negative", action="append", required=True, help="a prompt without it (repeat)"
    )
    parser.add_argument(
        "--prompt",
        action="append",
        required=True,
        help="a prompt to continue (repeat: each gets its own comparison; --calibrate averages)",
    )
    parser.add_argument(
        "--scale",
        type=float,
        help="r: add r * mean activation norm along the vector's direction (not with --calibrate)",
    )
    parser.add_argument(
        "--calibrate",
        action="store_true",
        help="instead of one scale, sweep --scales and print which are usable: the concept "
        "moves (needs --concept) and the fluent fraction stays within --tolerance of unsteered",
    )
    parser.add_argument(
        "--scales",
        type=float,
        nargs="+",
        default=list(DEFAULT_CALIBRATION_SCALES),
        help="relative scales --calibrate sweeps",
    )
    parser.add_argument(
        "--tolerance", type=float, default=0.2, help="--calibrate: allowed fluency drop"
    )
    parser.add_argument("--without-prior", action="store_true", help="--calibrate plain steering")
    parser.add_argument("--plot", help="--calibrate: save the calibration plot to this PNG path")
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0, help="seed of the denoising noise")
    parser.add_argument(
        "--t-start", type=float, default=DEFAULT_T_START, help="noise level before denoising"
    )
    parser.add_argument(
        "--num-steps", type=int, default=DEFAULT_NUM_STEPS, help="prior evaluations per token"
    )
    parser.add_argument(
        "--prior-dtype",
        choices=[AUTO_DTYPE, "float32", "bfloat16"],
        default=AUTO_DTYPE,
        help="the prior's weights: auto is bfloat16 where the device computes it natively "
        "(2.6-3.4x faster denoising on such a CPU, results within ~0.3%%), else float32",
    )
    parser.add_argument("--positions", choices=POSITIONS, default="all")
    parser.add_argument(
        "--denoise-mode",
        choices=DENOISE_MODES,
        default=DEFAULT_DENOISE_MODE,
        help="replace: the prior's denoising of the steered activation (the paper's); edit: the "
        "model's own activation plus the prior's map of the edit (unchanged at scale 0)",
    )
    parser.add_argument("--concept", help="comma-separated concept words to score, e.g. 'wedding'")
    parser.add_argument(
        "--lexicon", help="comma-separated held-out concept words to count in the generated text"
    )
    parser.add_argument("--model", default=DEFAULT_MODEL_NAME, help="TransformerLens model name")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: the model's)")
    common.add_model_kind_argument(parser)
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


def _check_mode(args: argparse.Namespace) -> None:
    """One scale, or --calibrate with concept words; a clear error before anything loads."""
    if args.calibrate:
        if args.scale is not None:
            raise ValueError("--scale and --calibrate exclude each other; --scales sets the sweep.")
        if not _words(args.concept):
            raise ValueError(
                "--calibrate needs --concept (comma-separated words whose probability shows the "
                "concept), e.g. --concept 'happy,joy'."
            )
    elif args.scale is None:
        raise ValueError("pass --scale R (e.g. 0.25), or --calibrate to find a usable range.")


def prior_on(prior: DiffusionPrior, device: torch.device, dtype_name: str) -> DiffusionPrior:
    """``prior`` on ``device`` with its weights in ``dtype_name`` (``--prior-dtype``)."""
    if dtype_name == AUTO_DTYPE:
        return prior.to(device, resolve_auto_dtype(AUTO_DTYPE, device))
    return prior.to(device, models.resolve_dtype(dtype_name))


def run_steer(args: argparse.Namespace) -> int:
    """Run ``tl-diffusion-prior steer`` with parsed ``args``."""
    _check_mode(args)
    # The prior (a folder, the shipped one or a Hub name) loads, or fails, before the model.
    prior = load_prior(resolve_prior_dir(args.prior))
    model = models.load_model(args.model, device=args.device, kind=args.model_kind)
    prior = prior_on(prior, model_device(model), args.prior_dtype)
    if args.calibrate:
        return _run_calibration(args, model, prior)
    vector = steering_vector(model, prior.config.hook_name, args.positive, args.negative)
    for prompt in args.prompt:
        comparison = compare_generations(
            model,
            prior,
            vector,
            prompt,
            args.scale,
            max_new_tokens=args.max_new_tokens,
            t_start=args.t_start,
            num_steps=args.num_steps,
            seed=args.seed,
            positions=args.positions,
            denoise_mode=args.denoise_mode,
            concept_words=_words(args.concept),
            concept_lexicon=_words(args.lexicon),
            norm_prompts=args.positive + args.negative,
        )
        print_comparison(comparison, prompt, args.width)
    return 0


def _run_calibration(args: argparse.Namespace, model, prior) -> int:
    concept = SteeringConcept(
        "concept",
        positive=args.positive,
        negative=args.negative,
        words=_words(args.concept),
        lexicon=_words(args.lexicon) or (),
    )
    result = calibrate_scale(
        model,
        prior.config.hook_name,
        concept,
        args.prompt,
        reference_norm_from_prior(prior),
        args.scales,
        prior=None if args.without_prior else prior,
        tolerance=args.tolerance,
        max_new_tokens=args.max_new_tokens,
        t_start=args.t_start,
        num_steps=args.num_steps,
        seed=args.seed,
        denoise_mode=args.denoise_mode,
    )
    print(result.table())
    usable = result.usable_range
    print(
        f"usable range: r = {usable[0]:g} to {usable[1]:g}"
        if usable
        else "no usable scale: widen --scales, add prompts or raise --tolerance"
    )
    if args.plot:
        result.plot(args.plot)
        print(f"plot saved to {args.plot}")
    return 0


def _words(comma_separated: str | None) -> list[str] | None:
    """``"a, b,"`` -> ``["a", "b"]``; None (or nothing but commas) -> None."""
    words = [w.strip() for w in (comma_separated or "").split(",") if w.strip()]
    return words or None
