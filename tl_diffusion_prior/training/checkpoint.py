"""Atomic, pickle-free training checkpoints that resume bit-exactly.

A checkpoint is a directory ``<run_dir>/step_<step>/``::

    trainer_state.safetensors   model and EMA weights, AdamW moments (rank 0)
    trainer_state.json          step, config, history, optimizer settings and scalars (rank 0)
    rank_<r>.safetensors        this rank's buffer contents, generator and torch RNG states
    rank_<r>.json               this rank's token-source position, python/numpy RNG states

Every rank writes its own ``rank_<r>`` files (each rank samples its own buffer from its own shard of
the corpus), rank 0 writes the shared files, and the directory only appears under its final name,
by one rename (:func:`~tl_diffusion_prior.core.serialization.replace_dir`, an atomic exchange when
that step was saved before), once every file is flushed to disk: a crash at any point leaves the
previous checkpoint as the latest complete one. Ranks must share a filesystem (always true on one
node).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from tl_diffusion_prior.capture.buffer import ActivationRingBuffer
from tl_diffusion_prior.constants import (
    CHECKPOINT_META_NAME,
    CHECKPOINT_STATE_NAME,
    FORMAT_VERSION,
)
from tl_diffusion_prior.core import distributed
from tl_diffusion_prior.core.integrity import file_sha256, verify_file_sha256
from tl_diffusion_prior.core.serialization import (
    atomic_save_safetensors,
    atomic_write_json,
    load_safetensors,
    read_json,
    replace_dir,
)
from tl_diffusion_prior.priors.base import DiffusionPrior
from tl_diffusion_prior.training.config import TrainConfig
from tl_diffusion_prior.training.state_dicts import (
    join_state,
    load_optimizer_state,
    load_rng_state,
    optimizer_state,
    rng_state,
    split_state,
)

_STEP_DIR = re.compile(r"^step_(\d+)$")


def checkpoint_name(step: int) -> str:
    return f"step_{step:08d}"


def _rank_names(rank: int) -> tuple[str, str]:
    return f"rank_{rank:05d}.safetensors", f"rank_{rank:05d}.json"


@dataclass
class Checkpoint:
    """A loaded checkpoint, as this rank sees it.

    Attributes:
        path: the checkpoint directory.
        step: optimizer steps completed when it was written.
        tensors: the shared tensors (``model/…``, ``ema/…``, ``optimizer/…``).
        meta: the shared JSON state.
        rank_tensors: this rank's tensors (``buffer/…``, ``rng/…``, ``refill/…``).
        rank_meta: this rank's JSON state.
    """

    path: Path
    step: int
    tensors: dict[str, Tensor]
    meta: dict[str, Any]
    rank_tensors: dict[str, Tensor]
    rank_meta: dict[str, Any]


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The complete checkpoint with the highest step in ``run_dir``, or None.

    Temporary (``.step_*.tmp``) directories left by a crash are ignored.
    """
    found = _complete_checkpoints(Path(run_dir))
    return found[-1][1] if found else None


def _complete_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """``(step, directory)`` of every complete checkpoint in ``run_dir``, by increasing step."""
    if not run_dir.is_dir():
        return []
    return sorted(
        (int(m.group(1)), child)
        for child in run_dir.iterdir()
        if (m := _STEP_DIR.match(child.name)) and (child / CHECKPOINT_META_NAME).is_file()
    )


def save_checkpoint(
    run_dir: str | os.PathLike,
    step: int,
    *,
    tensors: Mapping[str, Tensor],
    meta: Mapping[str, Any],
    rank_tensors: Mapping[str, Tensor],
    rank_meta: Mapping[str, Any],
    keep_last: int = 1,
) -> Path:
    """Write a checkpoint for ``step`` atomically; call it on every rank at the same step.

    ``tensors``/``meta`` are only used on rank 0. Older checkpoints beyond the ``keep_last`` most
    recent are deleted after the new one is in place. Returns the checkpoint directory.
    """
    if keep_last < 1:
        raise ValueError(f"keep_last must be >= 1, got {keep_last}.")
    run_dir = Path(run_dir)
    rank = distributed.get_rank()
    final = run_dir / checkpoint_name(step)
    # A fixed temporary name lets every rank find the directory without exchanging messages.
    tmp = run_dir / f".{checkpoint_name(step)}.tmp"
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    distributed.barrier()
    try:
        tensor_name, json_name = _rank_names(rank)
        atomic_save_safetensors(tmp / tensor_name, dict(rank_tensors))
        # Each JSON records the sha256 of its safetensors file, compared on load.
        atomic_write_json(tmp / json_name, {**rank_meta, "sha256": file_sha256(tmp / tensor_name)})
        distributed.barrier()
        if rank == 0:
            atomic_save_safetensors(
                tmp / CHECKPOINT_STATE_NAME,
                dict(tensors),
                metadata={"format_version": str(FORMAT_VERSION)},
            )
            full_meta = {
                **meta,
                "format_version": FORMAT_VERSION,
                "step": step,
                "world_size": distributed.get_world_size(),
                "sha256": file_sha256(tmp / CHECKPOINT_STATE_NAME),
            }
            # Written last: a directory with this file is complete.
            atomic_write_json(tmp / CHECKPOINT_META_NAME, full_meta)
            replace_dir(tmp, final)
            _prune(run_dir, keep_last)
    finally:
        if rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
    distributed.barrier()
    return final


def _prune(run_dir: Path, keep_last: int) -> None:
    for _, child in _complete_checkpoints(run_dir)[:-keep_last]:
        shutil.rmtree(child, ignore_errors=True)


def load_checkpoint(
    path: str | os.PathLike, rank: int | None = None, *, verify: bool = True
) -> Checkpoint:
    """Read a checkpoint directory written by :func:`save_checkpoint` (no unpickling).

    ``verify`` compares each safetensors file with the sha256 its JSON recorded (checkpoints
    written before that are not compared); a changed byte raises
    :class:`~tl_diffusion_prior.core.integrity.CorruptFileError` naming the file.
    """
    path = Path(path)
    meta_path = path / CHECKPOINT_META_NAME
    if not meta_path.is_file():
        raise FileNotFoundError(
            f"{path!s} is not a complete checkpoint (no {CHECKPOINT_META_NAME}); pass a "
            "step_* directory or a run directory that contains one."
        )
    meta = read_json(meta_path)
    version = meta.get("format_version", FORMAT_VERSION)
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{path!s} was written by a newer tl-diffusion-prior (format {version}); upgrade to "
            "resume from it."
        )
    rank = distributed.get_rank() if rank is None else rank
    world_size = distributed.get_world_size()
    if meta.get("world_size", 1) != world_size:
        raise ValueError(
            f"{path!s} was written by {meta.get('world_size')} ranks but this job has "
            f"{world_size}; resume with the same number of processes (each rank's buffer and "
            "data position are saved separately)."
        )
    tensor_name, json_name = _rank_names(rank)
    rank_meta = read_json(path / json_name)
    # The rank's checksum is the file's, not part of the state it was given to save.
    recorded = {
        CHECKPOINT_STATE_NAME: meta.get("sha256"),
        tensor_name: rank_meta.pop("sha256", None),
    }
    if verify:
        for name, digest in recorded.items():
            if isinstance(digest, str):
                verify_file_sha256(path / name, digest, f"the checkpoint's JSON in {path!s}")
    return Checkpoint(
        path=path,
        step=int(meta["step"]),
        tensors=load_safetensors(path / CHECKPOINT_STATE_NAME),
        meta=meta,
        rank_tensors=load_safetensors(path / tensor_name),
        rank_meta=rank_meta,
    )


# ------------------------------------------------------------------------- state packing helpers
def resolve_resume(
    checkpoint_dir: str | os.PathLike | None, resume: bool | str | os.PathLike
) -> Path | None:
    """The checkpoint ``train_prior(resume=...)`` should continue from, or None to start fresh."""
    if resume is False:
        if checkpoint_dir and latest_checkpoint(checkpoint_dir):
            raise ValueError(
                f"{checkpoint_dir} already holds checkpoints but resume=False; pass "
                "resume=True to continue that run, or choose an empty checkpoint_dir."
            )
        return None
    if resume is True:
        return latest_checkpoint(checkpoint_dir) if checkpoint_dir else None
    path = Path(resume)
    if not (path / CHECKPOINT_META_NAME).is_file():
        latest = latest_checkpoint(path)
        if latest is None:
            raise FileNotFoundError(
                f"resume={str(path)!r} is neither a checkpoint nor a run directory holding one."
            )
        path = latest
    return path


def save_training_state(
    run_dir: str | os.PathLike,
    step: int,
    *,
    prior: DiffusionPrior,
    optimizer: torch.optim.Optimizer,
    ema: Any,
    generators: Mapping[str, torch.Generator],
    buffer: ActivationRingBuffer,
    refill: Any,
    config: TrainConfig,
    meta: Mapping[str, Any],
) -> Path:
    """Checkpoint everything a training run needs to continue bit-exactly (see module docstring).

    ``ema`` is a diffusers ``EMAModel`` or None; ``refill`` is saved when it has ``state_dict()``;
    ``meta`` adds JSON fields (history, elapsed time, ...).
    """
    tensors = {f"model/{k}": v for k, v in prior.state_dict().items()}
    optimizer_tensors, optimizer_meta = optimizer_state(optimizer)
    tensors.update(optimizer_tensors)
    meta = {
        **meta,
        "config": config.to_dict(),
        "prior_config": prior.config.to_dict(),
        "optimizer": optimizer_meta,
        # What the buffer rows are (hooks, source model's name and fingerprint), compared on resume.
        "buffer": {"hook_names": list(buffer.hook_names), **buffer.provenance},
    }
    if ema is not None:
        ema_state = ema.state_dict()
        shadow = ema_state.pop("shadow_params")
        tensors.update({f"ema/{i:05d}": p for i, p in enumerate(shadow)})
        meta["ema"] = ema_state
    rank_tensors, rng_meta = rng_state(generators)
    rank_tensors.update({f"buffer/{k}": v for k, v in buffer.state_dict().items()})
    rank_meta: dict[str, Any] = {"rng": rng_meta, "refill": None}
    if hasattr(refill, "state_dict"):
        refill_tensors, rank_meta["refill"] = split_state(refill.state_dict(), "refill/")
        rank_tensors.update(refill_tensors)
    return save_checkpoint(
        run_dir,
        step,
        tensors=tensors,
        meta=meta,
        rank_tensors=rank_tensors,
        rank_meta=rank_meta,
        keep_last=config.keep_checkpoints,
    )


def load_prior_weights(prior: DiffusionPrior, state: Checkpoint) -> None:
    """Load the checkpoint's raw (not EMA) weights and normaliser into ``prior``."""
    weights = join_state(state.tensors, {}, "model/")
    missing, unexpected = prior.load_state_dict(weights, strict=False)
    if missing or unexpected:
        saved = state.meta.get("prior_config", {})
        raise ValueError(
            f"Checkpoint {state.path} does not fit this prior: missing {sorted(missing)}, "
            f"unexpected {sorted(unexpected)}. It was written for a {saved.get('architecture')!r} "
            f"prior with d_model={saved.get('d_model')}; build the prior with that config."
        )


def restore_training_state(
    state: Checkpoint,
    *,
    optimizer: torch.optim.Optimizer,
    ema: Any,
    generators: Mapping[str, torch.Generator],
    buffer: ActivationRingBuffer,
    refill: Any,
) -> None:
    """Restore what :func:`save_training_state` saved, except the prior's weights."""
    load_optimizer_state(optimizer, state.tensors, state.meta["optimizer"])
    if ema is not None:
        if "ema" not in state.meta:
            raise ValueError(
                f"Checkpoint {state.path} has no EMA weights but ema_decay > 0; resume with "
                "ema_decay=0 as in the original run."
            )
        device = ema.shadow_params[0].device
        shadow = [v.to(device) for k, v in sorted(state.tensors.items()) if k.startswith("ema/")]
        ema.load_state_dict({**state.meta["ema"], "shadow_params": shadow})
    load_rng_state(generators, state.rank_tensors, state.rank_meta["rng"])
    buffer.load_state_dict(
        join_state(state.rank_tensors, {}, "buffer/"), source=f"The buffer in {state.path!s}"
    )
    refill_meta = state.rank_meta.get("refill")
    if refill_meta is not None:
        if not hasattr(refill, "load_state_dict"):
            raise ValueError(
                f"Checkpoint {state.path} saved a refill position but refill={refill!r} cannot "
                "restore it; pass the same kind of refill (make_refill) to resume."
            )
        refill.load_state_dict(join_state(state.rank_tensors, refill_meta, "refill/"))
