"""The ``tl-diffusion-prior`` command line: demo, capture, train, steer, eval."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from tl_diffusion_prior.cli import capture, common, demo, steer, train
from tl_diffusion_prior.cli import eval as eval_command

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
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tl-diffusion-prior", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, add_arguments, run) in SUBCOMMANDS.items():
        command = sub.add_parser(name, help=help_text)
        add_arguments(command)
        command.set_defaults(func=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
