"""Options and helpers that several subcommands share."""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

from tl_diffusion_prior.capture import ActivationCapture
from tl_diffusion_prior.constants import (
    BASELINES_DIRNAME,
    CHECKSUMS_NAME,
    DEFAULT_HOOK,
    DEFAULT_MODEL_NAME,
    LOSS_CSV_NAME,
    LOSS_PNG_NAME,
    MODEL_CARD_NAME,
    PLOTS_DIRNAME,
    REPORT_JSON_NAME,
    REPORT_MD_NAME,
    STEER_VECTORS_NAME,
    TRAINING_RECORD_NAME,
)
from tl_diffusion_prior.core.lens import MODEL_KINDS
from tl_diffusion_prior.core.paths import holds_only, is_pretrained_dir
from tl_diffusion_prior.core.serialization import safetensors_metadata
from tl_diffusion_prior.data import (
    corpus_token_source,
    hf_dataset_token_source,
    text_file_token_source,
)
from tl_diffusion_prior.priors import PRIOR_REGISTRY

# What an eval report folder holds (evaluate.report.write_report and the saved baselines).
REPORT_NAMES = frozenset(
    {REPORT_JSON_NAME, REPORT_MD_NAME, STEER_VECTORS_NAME, PLOTS_DIRNAME, BASELINES_DIRNAME}
)


def code_version() -> dict[str, str | bool | None]:
    """The package version and, in a git checkout, its commit and whether the tree was dirty."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        package = version("tl-diffusion-prior")
    except PackageNotFoundError:
        package = None
    root = str(Path(__file__).resolve().parents[2])
    commit, dirty = None, None
    try:
        git = ["git", "-C", root]
        run = dict(capture_output=True, text=True, check=True)
        commit = subprocess.run([*git, "rev-parse", "HEAD"], **run).stdout.strip()
        status = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"], **run)
        dirty = bool(status.stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        pass  # an installed wheel, or no git: the package version is what there is
    return {"package": package, "commit": commit, "dirty": dirty}


def add_overwrite_argument(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help=f"replace {what} already at --out (anything else there is never replaced); the old "
        "one is kept until the new one is complete",
    )


def is_prior_dir(path: Path) -> bool:
    """Whether ``path`` is a prior saved by ``train`` (or ``save_pretrained``) and nothing else."""
    extra = (TRAINING_RECORD_NAME, CHECKSUMS_NAME, MODEL_CARD_NAME, LOSS_CSV_NAME, LOSS_PNG_NAME)
    return is_pretrained_dir(path, "architecture", PRIOR_REGISTRY, extra)


def is_buffer_file(path: Path) -> bool:
    """Whether ``path`` is a ring buffer saved by ``capture`` (``ActivationRingBuffer.save``)."""
    metadata = safetensors_metadata(path)
    return metadata is not None and {"format_version", "hook_names"} <= set(metadata)


def is_report_dir(path: Path) -> bool:
    """Whether ``path`` holds an eval report (or the baselines an unfinished eval saved) only."""
    return holds_only(path, REPORT_NAMES)


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL_NAME,
        help="TransformerLens model name; the default loads SmolLM2-135M-Instruct offline.",
    )
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: auto)")
    add_model_kind_argument(parser)


def add_model_kind_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model-kind",
        choices=MODEL_KINDS,
        default=None,
        help="hooked (HookedTransformer) or bridge (TransformerBridge); default: hooked on "
        "TransformerLens 3.x, bridge on 4.x",
    )


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
    add_overwrite_argument(parser, "a buffer")


def build_token_source(args, tokenizer, rank: int = 0, world_size: int = 1):
    common = dict(batch_size=args.batch_size, ctx=args.ctx, rank=rank, world_size=world_size)
    if getattr(args, "text_file", None):
        return text_file_token_source(args.text_file, tokenizer, **common)
    if getattr(args, "dataset", None):
        return hf_dataset_token_source(args.dataset, tokenizer, **common)
    return corpus_token_source(tokenizer, split=args.split, **common)


def describe_capture(capture: ActivationCapture, elapsed: float) -> str:
    """What a capture kept and dropped, and the captured activations' norms, for the log."""
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
