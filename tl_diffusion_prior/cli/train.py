"""``tl-diffusion-prior train``: capture activations from the corpus, train a prior, save it.

    tl-diffusion-prior train --prior mlp --hook blocks.15.hook_resid_post \\
        --n-activations 200000 --steps 2000 --batch-size 1024 --out runs/mlp

``--hook`` repeated (with ``--prior glp``) trains one multi-layer prior over those layers: every
buffer row holds all the hooks, each layer is normalised with its own statistics, and the saved
prior is used at one layer with ``load_prior(out).at_layer(L)``.

Captures ``--n-activations`` rows from the packaged corpus's train split into a ring buffer and
``--val-activations`` rows from its held-out split, trains (refilling the buffer with the next
tokens every ``--refill-every`` steps), and writes the prior with ``save_pretrained(--out)`` plus
its loss curve. Checkpoints go to ``--checkpoint-dir`` (default ``<out>.checkpoints``, a sibling,
since saving replaces ``--out`` whole); ``--resume`` continues from the latest one.

``--out`` is checked before anything loads: an existing, non-empty ``--out`` that is not a saved
prior is refused, and a saved prior there is replaced (atomically, once the new one is complete)
only with ``--overwrite``, or with ``--resume`` when a checkpoint is resumed (the run being
continued wrote it). The checkpoint directory must be new, empty or hold only checkpoints and loss
curves.

Under ``torchrun --nproc_per_node N -m tl_diffusion_prior.cli.main train ...`` every rank captures
its own shard of the corpus; normalisation statistics, gradients and losses are reduced across
ranks.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tl_diffusion_prior.capture import (
    ActivationCapture,
    ActivationRingBuffer,
    CaptureConfig,
    fill_buffer,
    make_refill,
)
from tl_diffusion_prior.cli.common import (
    add_model_kind_argument,
    add_overwrite_argument,
    code_version,
    is_prior_dir,
)
from tl_diffusion_prior.constants import (
    CHECKPOINT_META_NAME,
    DEFAULT_HOOK,
    DEFAULT_MODEL_NAME,
    LOSS_CSV_NAME,
    LOSS_PNG_NAME,
)
from tl_diffusion_prior.core import distributed
from tl_diffusion_prior.core.fingerprint import model_fingerprint
from tl_diffusion_prior.core.paths import check_not_inside, check_output_dir
from tl_diffusion_prior.core.resources import check_fits_on_disk
from tl_diffusion_prior.core.serialization import atomic_directory, read_json
from tl_diffusion_prior.data import TokenSource, models
from tl_diffusion_prior.data.corpus import corpus_sources
from tl_diffusion_prior.data.sources import corpus_token_source
from tl_diffusion_prior.priors import PRIOR_REGISTRY, glp_prior_for_hooks
from tl_diffusion_prior.priors.glp import ANY_LAYER, hook_for_layer
from tl_diffusion_prior.priors.multi_layer import layers_of_hooks
from tl_diffusion_prior.recipes import PRIOR_PRESETS, TRAIN_PRESETS
from tl_diffusion_prior.training import TrainConfig, train_prior
from tl_diffusion_prior.training.checkpoint import latest_checkpoint
from tl_diffusion_prior.training.trainer import check_resume_source


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``train`` subcommand's options."""
    parser.add_argument("--prior", default="mlp", help="prior design: mlp, unet or glp")
    parser.add_argument(
        "--hook",
        action="append",
        help=f"full TransformerLens hook name (default {DEFAULT_HOOK}); repeat it, with "
        "--prior glp, for one multi-layer prior over those layers",
    )
    parser.add_argument("--model", default=DEFAULT_MODEL_NAME, help="TransformerLens model name")
    add_model_kind_argument(parser)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    parser.add_argument("--out", required=True, help="directory the trained prior is saved to")
    add_overwrite_argument(parser, "a prior")
    parser.add_argument(
        "--preset",
        choices=sorted(TRAIN_PRESETS),
        default="cpu",
        help="defaults for every option below that is not given (cpu: ~10 minutes of training "
        "per design on a 2-core CPU)",
    )
    parser.add_argument("--n-activations", type=int, help="buffer capacity (initial capture)")
    parser.add_argument("--val-activations", type=int, help="held-out rows for validation")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--batch-size", type=int, help="rows per step and per rank")
    parser.add_argument("--lr", type=float)
    parser.add_argument("--weight-decay", type=float)
    parser.add_argument("--ema-decay", type=float, help="0 disables the EMA")
    parser.add_argument("--grad-clip", type=float)
    parser.add_argument("--warmup-fraction", type=float)
    parser.add_argument("--log-every", type=int)
    parser.add_argument("--eval-every", type=int)
    parser.add_argument("--checkpoint-every", type=int)
    parser.add_argument("--checkpoint-dir", help="default: <out>.checkpoints")
    parser.add_argument("--refill-every", type=int, help="steps between buffer refills; 0 never")
    parser.add_argument("--refill-fraction", type=float)
    parser.add_argument("--time-budget", type=float, help="seconds of training in this session")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--autocast", choices=["auto", "bf16", "off"], default="auto")
    parser.add_argument("--ctx", type=int, default=128, help="tokens per captured sequence")
    parser.add_argument("--capture-batch-size", type=int, default=16, help="sequences per forward")
    parser.add_argument("--buffer-dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--outlier-multiple", type=float, default=5.0)
    parser.add_argument(
        "--prior-preset", help="a preset of the prior's config, e.g. writeup for --prior unet"
    )
    parser.add_argument(
        "--prior-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="prior config field, VALUE as JSON (e.g. depth=6); repeatable",
    )
    parser.add_argument("--no-progress", action="store_true")


def _option(args: argparse.Namespace, name: str) -> Any:
    value = getattr(args, name, None)
    if value is not None:
        return value
    design = PRIOR_PRESETS.get(args.prior, {}).get(args.preset, {})
    if name in design:
        return design[name]
    return TRAIN_PRESETS.get(args.preset, TRAIN_PRESETS["cpu"]).get(name)


def _prior_options(pairs: list[str]) -> dict[str, Any]:
    options = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--prior-option expects KEY=VALUE, got {pair!r}.")
        try:
            options[key] = json.loads(raw)
        except json.JSONDecodeError:
            options[key] = raw
    return options


def build_train_config(args: argparse.Namespace, checkpoint_dir: str) -> TrainConfig:
    """The :class:`TrainConfig` from the options, the preset and the prior's preset."""
    fields: dict[str, Any] = {
        "steps": _option(args, "steps"),
        "batch_size": _option(args, "batch_size"),
        "checkpoint_dir": checkpoint_dir,
        "seed": args.seed,
        "autocast": args.autocast,
        "progress": not args.no_progress,
        "time_budget_s": args.time_budget,
    }
    for name in (
        "lr",
        "weight_decay",
        "ema_decay",
        "grad_clip",
        "warmup_fraction",
        "log_every",
        "eval_every",
        "checkpoint_every",
        "refill_every",
        "refill_fraction",
    ):
        value = _option(args, name)
        if value is not None:
            fields[name] = value
    fields["val_size"] = _option(args, "val_activations")
    return TrainConfig(**fields)


def train_hooks(args: argparse.Namespace) -> list[str]:
    """The ``--hook``s (default: :data:`DEFAULT_HOOK`); several need ``--prior glp``."""
    hooks = [args.hook] if isinstance(args.hook, str) else list(args.hook or [DEFAULT_HOOK])
    if len(hooks) > 1:
        if args.prior != "glp":
            raise ValueError(
                f"Several --hook ({', '.join(hooks)}) train one multi-layer prior, which is "
                f"--prior glp, not {args.prior!r}; pass --prior glp, or one --hook."
            )
        layers_of_hooks(hooks)  # shallowest first, one point: refused before anything loads
    return hooks


def run_hook_name(args: argparse.Namespace) -> str:
    """The hook name the prior and its checkpoints record (``blocks.*.<point>`` for several)."""
    hooks = train_hooks(args)
    if len(hooks) == 1:
        return hooks[0]
    return hook_for_layer(ANY_LAYER, layers_of_hooks(hooks)[1])


def build_prior(args: argparse.Namespace, model: Any) -> Any:
    """The prior to train: ``--prior glp`` from :func:`glp_prior_for_hooks` (one or several
    hooks; ``--prior-option`` fields are its keyword arguments), else from its config class."""
    if args.prior != "glp":
        prior_cls = PRIOR_REGISTRY[args.prior]
        return prior_cls(build_prior_config(prior_cls, args, model.cfg.d_model))
    if args.prior_preset is not None:
        raise ValueError("--prior-preset: the 'glp' prior has no presets.")
    return glp_prior_for_hooks(
        train_hooks(args),
        d_model=model.cfg.d_model,
        model_name=args.model,
        n_model_layers=model.cfg.n_layers,
        **_prior_options(args.prior_option),
    )


def build_prior_config(prior_cls: Any, args: argparse.Namespace, d_model: int) -> Any:
    """The prior's config from ``--prior-preset`` and ``--prior-option``s."""
    fields = dict(d_model=d_model, hook_name=train_hooks(args)[0], model_name=args.model)
    fields.update(_prior_options(args.prior_option))
    if args.prior_preset is None:
        return prior_cls.config_class(**fields)
    preset = getattr(prior_cls.config_class, "preset", None)
    if preset is None:
        raise ValueError(f"--prior-preset: the {args.prior!r} prior has no presets.")
    return preset(args.prior_preset, **fields)


@dataclass
class _Captured:
    """The buffers ``run_train`` trains and validates on, and where refills come from."""

    buffer: ActivationRingBuffer
    val_buffer: ActivationRingBuffer
    capture: ActivationCapture
    train_source: TokenSource
    seconds: float


def _capture(args: argparse.Namespace, model, env, resuming: bool, n_val: int) -> _Captured:
    """Fill the training buffer (unless resuming: the checkpoint restores it) and the held-out
    buffer from this rank's shard of the packaged corpus."""
    n_activations = _option(args, "n_activations")
    d_model = model.cfg.d_model
    shard = dict(rank=env.rank, world_size=env.world_size)
    common = dict(batch_size=args.capture_batch_size, ctx=args.ctx)
    train_source = corpus_token_source(
        model.tokenizer, "train", shuffle_seed=args.seed, epochs=None, **common, **shard
    )
    heldout_source = corpus_token_source(model.tokenizer, "heldout", **common, **shard)
    capture_config = CaptureConfig(outlier_multiple=args.outlier_multiple)
    dtype = getattr(torch, args.buffer_dtype)
    hooks, progress = train_hooks(args), env.is_main
    buffer = ActivationRingBuffer(n_activations, d_model, hooks, device=env.device, dtype=dtype)
    capture = ActivationCapture(model, hooks, buffer, capture_config)
    start = time.perf_counter()
    if not resuming:
        fill_buffer(
            model,
            train_source,
            hooks,
            n_activations,
            buffer=buffer,
            capture=capture,
            progress=progress,
        )
    val_buffer = ActivationRingBuffer(n_val, d_model, hooks, device=env.device)
    fill_buffer(
        model,
        heldout_source,
        hooks,
        n_val,
        buffer=val_buffer,
        config=capture_config,
        progress=progress,
    )
    seconds = time.perf_counter() - start
    return _Captured(buffer, val_buffer, capture, train_source, seconds)


def _provenance(
    args: argparse.Namespace, captured: _Captured, code: dict[str, Any]
) -> dict[str, Any]:
    """What the trained prior records about its data, and the command and code that made it
    (so a shipped prior can be reproduced)."""
    return {
        "command": shlex.join(["tl-diffusion-prior", *sys.argv[1:]]),
        "code_version": code,
        "model_name": args.model,
        "corpus": "tl_diffusion_prior packaged corpus",
        "corpus_sources": corpus_sources(),
        "corpus_split": "train",
        "ctx": args.ctx,
        "n_activations": _option(args, "n_activations"),
        "val_activations": captured.val_buffer.capacity,
        "outlier_multiple": args.outlier_multiple,
        "capture_s": round(captured.seconds, 2),
    }


def _checkpoint_dir(args: argparse.Namespace) -> str:
    """``--checkpoint-dir``, by default a sibling of ``--out`` (saving replaces ``--out`` whole)."""
    out = Path(args.out)
    if out.name in ("", ".", ".."):
        out = out.resolve()  # "--out ." has no name to add a suffix to (and is refused later)
    return args.checkpoint_dir or str(out.with_name(out.name + ".checkpoints"))


# What a checkpoint directory may hold: checkpoints, the loss curve, and the hidden temporary
# entries an interrupted save leaves (``.step_*.tmp``, ``.loss.csv.*.tmp``, ``.*.old``).
_CHECKPOINT_ENTRY = re.compile(
    rf"^(step_\d+|{re.escape(LOSS_CSV_NAME)}|{re.escape(LOSS_PNG_NAME)}|\..+\.(tmp|old))$"
)


def _is_checkpoint_dir(path: Path) -> bool:
    return all(_CHECKPOINT_ENTRY.match(child.name) for child in path.iterdir())


def check_train_outputs(args: argparse.Namespace) -> tuple[Path, str, bool]:
    """Check ``--out`` and the checkpoint directory before anything loads.

    Returns ``(out, checkpoint_dir, resuming)``; ``resuming`` is whether a checkpoint will be
    resumed. Raises ValueError for every case :func:`check_output_dir` refuses, a checkpoint
    directory inside ``--out`` (replacing ``--out`` would delete it) and existing checkpoints
    without ``--resume``.
    """
    checkpoint_dir = _checkpoint_dir(args)
    check_output_dir(
        checkpoint_dir,
        overwrite=True,  # checkpoints are never replaced: the check below needs --resume
        what="--checkpoint-dir (training checkpoints)",
        is_ours=_is_checkpoint_dir,
    )
    has_checkpoints = latest_checkpoint(checkpoint_dir) is not None
    if not args.resume and has_checkpoints:
        raise ValueError(
            f"{checkpoint_dir} already holds checkpoints; pass --resume to continue that run, or "
            "choose another --out / --checkpoint-dir."
        )
    resuming = bool(args.resume) and has_checkpoints
    out = check_output_dir(
        args.out,
        # The prior at --out is the result of the run being resumed.
        overwrite=args.overwrite or resuming,
        what="--out (the prior directory)",
        is_ours=is_prior_dir,
    )
    check_not_inside(checkpoint_dir, out, "--checkpoint-dir")
    return out, checkpoint_dir, resuming


def _check_disk(
    args: argparse.Namespace, prior: Any, config: TrainConfig, out: Path, checkpoint_dir: str
) -> None:
    """Refuse, before capturing, a disk that cannot hold the checkpoints and the saved prior."""
    dtype_size = torch.empty((), dtype=getattr(torch, args.buffer_dtype)).element_size()
    row_bytes = len(train_hooks(args)) * prior.config.d_model * dtype_size
    buffer_bytes = _option(args, "n_activations") * row_bytes
    weight_bytes = sum(p.numel() * p.element_size() for p in prior.parameters())
    # A checkpoint holds the buffer, the weights, their EMA and AdamW's two moments; the newest is
    # written before the oldest is pruned; the prior at --out is the weights once more.
    per_checkpoint = buffer_bytes + 4 * weight_bytes
    needed = per_checkpoint * (config.keep_checkpoints + 1) + weight_bytes
    check_fits_on_disk(
        needed,
        checkpoint_dir,
        "--checkpoint-dir (training checkpoints) and --out",
        "free space, or lower --n-activations",
    )


def _check_resumed_checkpoint(args: argparse.Namespace, checkpoint_dir: str) -> dict[str, Any]:
    """The latest checkpoint's JSON, once its hook and model name match this run's (checked
    before the model loads; the weights' fingerprint is checked once it has)."""
    path = latest_checkpoint(checkpoint_dir)
    meta = read_json(path / CHECKPOINT_META_NAME)
    check_resume_source(meta, str(path), hook_name=run_hook_name(args), model_name=args.model)
    return meta


def _save_prior(prior: Any, out: Path, checkpoint_dir: str) -> None:
    """Save the prior and its loss curve to ``out`` as one atomic replacement."""
    with atomic_directory(out) as tmp:
        prior.save_pretrained(tmp)
        for name in (LOSS_CSV_NAME, LOSS_PNG_NAME):
            if (Path(checkpoint_dir) / name).is_file():
                shutil.copy2(Path(checkpoint_dir) / name, tmp / name)


def run_train(args: argparse.Namespace) -> int:
    """Capture, train and save; returns the process exit code."""
    if args.prior not in PRIOR_REGISTRY:
        raise ValueError(f"--prior must be one of {sorted(PRIOR_REGISTRY)}, got {args.prior!r}.")
    hooks = train_hooks(args)
    # Read now: the code that runs is the code at launch, whatever changes in the tree later.
    code = code_version()
    out, checkpoint_dir, resuming = check_train_outputs(args)
    config = build_train_config(args, checkpoint_dir)
    resumed_meta = _check_resumed_checkpoint(args, checkpoint_dir) if resuming else None
    env = distributed.init_from_env(args.device)
    say = print if env.is_main else (lambda *a, **k: None)
    try:
        model = models.load_model(args.model, device=env.device, kind=args.model_kind)
        if resumed_meta is not None:  # the weights, before any capture
            check_resume_source(
                resumed_meta,
                str(latest_checkpoint(checkpoint_dir)),
                hook_name=run_hook_name(args),
                model_name=args.model,
                model_fingerprint=model_fingerprint(model),
            )
        torch.manual_seed(args.seed)
        prior = build_prior(args, model).to(env.device)
        say(
            f"{args.prior} prior: {prior.num_parameters:,} parameters; world size "
            f"{env.world_size}, device {env.device}"
        )
        _check_disk(args, prior, config, out, checkpoint_dir)
        captured = _capture(args, model, env, resuming, config.val_size)
        say(
            f"captured {captured.buffer.num_pushed:,} train and "
            f"{captured.val_buffer.num_pushed:,} held-out activations per rank in "
            f"{captured.seconds:.1f} s"
        )
        refill = make_refill(
            model, captured.train_source, hooks, captured.buffer, capture=captured.capture
        )
        result = train_prior(
            prior,
            captured.buffer,
            config,
            val_activations=captured.val_buffer.filled_rows(hooks if len(hooks) > 1 else hooks[0]),
            refill=refill if config.refill_every else None,
            resume=bool(args.resume),
            provenance=_provenance(args, captured, code),
        )
        if env.is_main:
            _save_prior(prior, out, checkpoint_dir)
        say(
            f"{result.stopped_reason} after {result.steps} steps ({result.elapsed_s:.0f} s, "
            f"{result.samples_per_s:,.0f} samples/s): val loss {result.initial_val_loss:.4f} "
            f"at the start, {result.final_val_loss:.4f} at the end; "
            f"Gaussian reference {result.gaussian_reference:.4f}, ratio "
            f"{result.val_over_reference:.3f}. Prior saved to {out}"
        )
        distributed.barrier()
    finally:
        distributed.cleanup()
    return 0
