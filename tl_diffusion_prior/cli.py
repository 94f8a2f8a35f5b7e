"""The ``tl-diffusion-prior`` command line: demo, capture, train, steer, eval."""

from __future__ import annotations

import argparse
import sys
import time

from tl_diffusion_prior.constants import DEFAULT_HOOK, DEFAULT_MODEL_NAME


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL_NAME,
        help="TransformerLens model name; the default loads SmolLM2-135M-Instruct offline.",
    )
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: auto)")


def add_capture_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--hook", action="append", help=f"hook name(s); default {DEFAULT_HOOK}")
    parser.add_argument("--n-activations", type=int, default=50_000)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--ctx", type=int, default=128, help="tokens per sequence")
    parser.add_argument("--split", choices=["train", "heldout"], default="train")
    parser.add_argument(
        "--text-file", action="append", help="capture from these text files instead of the corpus"
    )
    parser.add_argument("--dataset", help="a Hugging Face datasets name (needs a hub)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--outlier-multiple", type=float, default=5.0)
    parser.add_argument("--out", required=True, help="where to write the buffer (.safetensors)")


def build_token_source(args, tokenizer, rank: int = 0, world_size: int = 1):
    from tl_diffusion_prior import token_source

    common = dict(batch_size=args.batch_size, ctx=args.ctx, rank=rank, world_size=world_size)
    if getattr(args, "text_file", None):
        return token_source.text_file_token_source(args.text_file, tokenizer, **common)
    if getattr(args, "dataset", None):
        return token_source.hf_dataset_token_source(args.dataset, tokenizer, **common)
    return token_source.corpus_token_source(tokenizer, split=args.split, **common)


def run_capture(args) -> int:
    import torch

    from tl_diffusion_prior.capture import ActivationCapture, CaptureConfig, fill_buffer
    from tl_diffusion_prior.offline_model import load_model

    model = load_model(args.model, device=args.device)
    hooks = args.hook or [DEFAULT_HOOK]
    source = build_token_source(args, model.tokenizer)
    from tl_diffusion_prior.buffer import ActivationRingBuffer
    from tl_diffusion_prior.capture import model_device

    buffer = ActivationRingBuffer(
        args.n_activations,
        model.cfg.d_model,
        hooks,
        device=model_device(model),
        dtype=getattr(torch, args.dtype),
    )
    capture = ActivationCapture(
        model, hooks, buffer, CaptureConfig(outlier_multiple=args.outlier_multiple)
    )
    start = time.perf_counter()
    fill_buffer(model, source, hooks, args.n_activations, buffer=buffer, capture=capture)
    elapsed = time.perf_counter() - start
    print(describe_capture(capture, elapsed))
    buffer.save(args.out)
    print(f"buffer written to {args.out}")
    return 0


def describe_capture(capture, elapsed: float) -> str:
    buffer = capture.buffer
    stats = capture.stats()
    lines = [
        f"captured {stats.kept:,} activations in {elapsed:.1f} s "
        f"({stats.kept / elapsed:,.0f} act/s) into {buffer}",
        f"excluded positions (0/BOS/padding/ids): {stats.excluded_positions:,}; "
        f"outliers dropped: {stats.dropped_outliers:,}; non-finite dropped: "
        f"{stats.dropped_nonfinite:,}",
    ]
    for name in buffer.hook_names:
        std = buffer.var(name).sqrt()
        norms = buffer.filled_rows(name).float().norm(dim=-1)
        lines.append(
            f"{name}: mean |x| {norms.mean():.1f} (median {norms.median():.1f}, max "
            f"{norms.max():.1f}); per-dim std median {std.median():.2f}, max {std.max():.2f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tl-diffusion-prior", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    from tl_diffusion_prior import demo

    demo_parser = sub.add_parser("demo", help="the end-to-end demo on the default model")
    demo.add_demo_arguments(demo_parser)
    demo_parser.set_defaults(func=demo.run_demo)

    capture_parser = sub.add_parser("capture", help="fill a ring buffer from text and save it")
    add_capture_arguments(capture_parser)
    capture_parser.set_defaults(func=run_capture)

    import importlib

    for name, module_name, help_text in [
        ("train", "tl_diffusion_prior.train", "train a diffusion prior"),
        ("steer", "tl_diffusion_prior.steer", "steer generations, with and without a prior"),
        ("eval", "tl_diffusion_prior.evaluate.cli", "evaluate priors against baselines"),
    ]:
        module = importlib.import_module(module_name)
        command = sub.add_parser(name, help=help_text)
        getattr(module, f"add_{name}_arguments")(command)
        command.set_defaults(func=getattr(module, f"run_{name}"))

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
