"""The ``tl-diffusion-prior`` command line: demo, capture, train, steer, eval, score.

Exit codes: 0 on success; 2 for a mistake in what was asked (an option argparse refuses, or an
argument, file or path the package refuses: one ``error:`` line on stderr says what was wrong and
what to do, and ``--debug`` adds the traceback); 130 when interrupted with Ctrl-C. Any other error
is a bug, and Python prints its full traceback (exit code 1).
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable

import torch

from tl_diffusion_prior.cli import capture, common, demo, score, steer, train
from tl_diffusion_prior.cli import eval as eval_command

PROG = "tl-diffusion-prior"
# argparse exits with 2 for a usage error; a refused argument, file or path is the same kind.
USER_ERROR_EXIT = 2
# The shell's convention for a process ended by SIGINT (128 + 2).
INTERRUPTED_EXIT = 130
# What the package raises for bad input: arguments (ValueError/TypeError, including JSON and
# UTF-8 decode errors), paths (OSError: missing, unreadable, a file where a folder is needed, no
# space left) and a device too small for the batch asked for. Anything else is a bug and keeps its
# traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    TypeError,
    OSError,
    torch.cuda.OutOfMemoryError,
)

# name -> (help, add the subcommand's options to its parser, run it with the parsed arguments)
SUBCOMMANDS: dict[
    str, tuple[str, Callable[[argparse.ArgumentParser], object], Callable[..., int]]
] = {
    "demo": ("the end-to-end demo on the default model", demo.add_demo_arguments, demo.run_demo),
    "capture": (
        "fill a ring buffer from text and save it",
        common.add_capture_arguments,
        capture.run_capture,
    ),
    "train": ("train a diffusion prior", train.add_train_arguments, train.run_train),
    "steer": (
        "steer generations, with and without a prior",
        steer.add_steer_arguments,
        steer.run_steer,
    ),
    "eval": (
        "evaluate priors against baselines",
        eval_command.add_eval_arguments,
        eval_command.run_eval,
    ),
    "score": (
        "print and plot the prior's per-token manifold score of texts",
        score.add_score_arguments,
        score.run_score,
    ),
}

_DEBUG_HELP = "on an error, print the full Python traceback instead of one line"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--debug", action="store_true", help=_DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, add_arguments, run) in SUBCOMMANDS.items():
        command = sub.add_parser(name, help=help_text)
        add_arguments(command)
        # Also accepted after the subcommand; SUPPRESS keeps a --debug given before it.
        command.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help=_DEBUG_HELP
        )
        command.set_defaults(func=run)
    return parser


def describe_error(error: BaseException) -> str:
    """The one line printed for a refused input: the message, or the type when there is none."""
    if isinstance(error, KeyboardInterrupt):
        return "interrupted (Ctrl-C)."
    return str(error).strip() or f"{type(error).__name__} (no message; --debug shows where)"


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (see the module docstring)."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (*USER_ERRORS, KeyboardInterrupt) as error:
        if args.debug:
            traceback.print_exc(file=sys.stderr)
        print(f"{PROG} {args.command}: error: {describe_error(error)}", file=sys.stderr)
        return INTERRUPTED_EXIT if isinstance(error, KeyboardInterrupt) else USER_ERROR_EXIT


if __name__ == "__main__":
    sys.exit(main())
