"""``tl-diffusion-prior score``: the prior's per-token manifold score of texts, printed and plotted.

    tl-diffusion-prior score --prior default --text-file notes.txt --plot scores.png

Each paragraph of each file (text between blank lines; ``--whole-file`` keeps each file whole) is
run through the model on its own, with a BOS prepended, and every token's activation at the prior's
hook is scored by ``prior.score`` (:mod:`tl_diffusion_prior.priors.score`): the prior's
noise-prediction error per dimension at a few fixed noise levels, in its normalised space. Larger
means less typical of the activations the prior was trained on. The BOS is not scored. The scores
are deterministic given ``--seed``; the default ``elbo`` method costs 3 prior evaluations per
token, ``one_step`` 1.
"""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path

import torch

from tl_diffusion_prior.capture import model_device
from tl_diffusion_prior.cli import common
from tl_diffusion_prior.core.validation import check_int
from tl_diffusion_prior.data import models
from tl_diffusion_prior.priors import load_prior, resolve_prior_dir
from tl_diffusion_prior.priors.score import ScoreConfig
from tl_diffusion_prior.steering.text_scores import TextScores, plot_text_scores, score_texts

#: File types matplotlib writes that ``--plot`` accepts.
PLOT_SUFFIXES = (".png", ".pdf", ".svg")


def add_score_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``score`` subcommand's options."""
    parser.add_argument(
        "--prior",
        required=True,
        help="directory of a saved prior, or 'default' for the shipped prior",
    )
    parser.add_argument(
        "--text-file", action="append", required=True, help="a UTF-8 text file to score (repeat)"
    )
    parser.add_argument(
        "--whole-file",
        action="store_true",
        help="score each file as one text (default: each paragraph on its own)",
    )
    parser.add_argument(
        "--plot", help=f"save a plot of the scores here ({', '.join(PLOT_SUFFIXES)})"
    )
    parser.add_argument(
        "--method",
        choices=ScoreConfig.METHODS,
        default="elbo",
        help="elbo: the error averaged over noise levels (default); one_step: one level; ode: "
        "the probability-flow ODE log-likelihood (MLP priors; ~30x slower)",
    )
    parser.add_argument(
        "--levels",
        type=float,
        nargs="+",
        help="noise levels t in (0, 1) (default: 0.1 0.25 0.5 for elbo, 0.25 for one_step)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the score's noise")
    parser.add_argument("--ode-steps", type=int, default=32, help="Euler steps of --method ode")
    parser.add_argument("--max-tokens", type=int, default=256, help="tokens per text, BOS included")
    common.add_model_arguments(parser)


def read_texts(paths: list[str], whole_file: bool) -> list[tuple[str, str]]:
    """``(label, text)`` for each paragraph (or whole file) of each file, or a clear error."""
    texts = []
    for name in paths:
        path = Path(name)
        if not path.is_file():
            raise FileNotFoundError(f"--text-file {name!r} does not exist or is not a file.")
        try:
            content = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as error:
            raise ValueError(f"--text-file {name!r} is not UTF-8 text ({error}).") from error
        parts = [content] if whole_file else re.split(r"\n\s*\n", content)
        parts = [part.strip() for part in parts if part.strip()]
        if not parts:
            raise ValueError(f"--text-file {name!r} holds no text.")
        for index, part in enumerate(parts, start=1):
            texts.append((name if whole_file else f"{name}, paragraph {index}", part))
    return texts


def _check_plot_path(path: str | None) -> None:
    if path is None:
        return
    if Path(path).suffix.lower() not in PLOT_SUFFIXES:
        raise ValueError(f"--plot must end in one of {PLOT_SUFFIXES}, got {path!r}.")
    if not Path(path).resolve().parent.is_dir():
        raise FileNotFoundError(f"--plot {path!r}: its folder does not exist; create it first.")


def format_scores(label: str, result: TextScores) -> str:
    """A header line with the text's summary, then one ``position score token`` line per token."""
    cut = " (truncated)" if result.truncated else ""
    lines = [f"== {label}{cut}: {result.summary()}"]
    for position, (token, score) in enumerate(
        zip(result.tokens, result.scores.tolist(), strict=True)
    ):
        shown = "       -" if math.isnan(score) else f"{score:8.3f}"
        lines.append(f"{position:>5} {shown}  {token!r}")
    return "\n".join(lines)


def _what(config: ScoreConfig) -> str:
    """What the printed numbers are, in one line."""
    if config.method == "ode":
        return (
            f"score: ode, {config.ode_steps} Euler steps, seed {config.seed} (negative "
            "log-likelihood in nats per dimension of the prior's normalised space; larger = less "
            "likely; the BOS is not scored)"
        )
    return (
        f"score: {config.method} at t = {', '.join(f'{t:g}' for t in config.levels)}, seed "
        f"{config.seed} (noise-prediction error per dimension in the prior's normalised space; "
        "larger = less typical; the BOS is not scored)"
    )


def run_score(args: argparse.Namespace) -> int:
    """Run ``tl-diffusion-prior score`` with parsed ``args``."""
    # Every argument, file and the prior are checked before the model loads.
    config = ScoreConfig(args.method, args.levels, args.seed, args.ode_steps)
    check_int("--max-tokens", args.max_tokens, 2)
    texts = read_texts(args.text_file, args.whole_file)
    _check_plot_path(args.plot)
    prior_dir = resolve_prior_dir(args.prior)
    prior = load_prior(prior_dir)
    model = models.load_model(args.model, device=args.device, kind=args.model_kind)
    prior = prior.to(model_device(model))
    results = score_texts(
        model,
        prior,
        [text for _, text in texts],
        method=config,
        max_tokens=args.max_tokens,
    )
    print(
        f"prior {args.prior} ({prior.config.architecture}) at {prior.config.hook_name}; "
        + _what(config)
    )
    for (label, _), result in zip(texts, results, strict=True):
        print(format_scores(label, result))
    scored = torch.cat([result.scored for result in results])
    print(
        f"all texts: {scored.numel()} tokens, mean {float(scored.mean()):.3f}, median "
        f"{float(scored.median()):.3f}, max {float(scored.max()):.3f}"
    )
    if args.plot:
        plot_text_scores(results, args.plot, title=f"manifold score at {prior.config.hook_name}")
        print(f"plot saved to {args.plot}")
    return 0
