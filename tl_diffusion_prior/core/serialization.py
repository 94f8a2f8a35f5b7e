"""Atomic, pickle-free writes: safetensors for tensors, JSON for everything else.

Every file the package writes goes through here so that a crash mid-write never leaves a torn
checkpoint or prior behind: data goes to a temporary sibling first, then ``os.replace`` swaps it in.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor


def _temp_sibling(path: Path) -> Path:
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(name)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, flushed to disk before the rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_sibling(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True))


def read_json(path: str | os.PathLike) -> Any:
    with open(path) as f:
        return json.load(f)


def atomic_save_safetensors(
    path: str | os.PathLike,
    tensors: dict[str, Tensor],
    metadata: dict[str, str] | None = None,
) -> None:
    """Save ``tensors`` (made contiguous, on CPU) to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_sibling(path)
    try:
        cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
        save_file(cpu, str(tmp), metadata=metadata)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_safetensors(
    path: str | os.PathLike, device: str | torch.device = "cpu"
) -> dict[str, Tensor]:
    if not Path(path).is_file():
        raise FileNotFoundError(f"No safetensors file at {path!s}.")
    return load_file(str(path), device=str(device))


@contextlib.contextmanager
def atomic_directory(final_dir: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``final_dir`` only if the block succeeds.

    An existing ``final_dir`` is kept until the new one is complete, then swapped out, so a reader
    sees either the old or the new directory, never a mixture.
    """
    final_dir = Path(final_dir)
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final_dir.name}.", suffix=".tmp", dir=final_dir.parent))
    try:
        yield tmp
        replace_dir(tmp, final_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def replace_dir(tmp: str | os.PathLike, final: str | os.PathLike) -> None:
    """Move the complete directory ``tmp`` to ``final``, replacing any directory already there.

    The old ``final`` is first renamed to a hidden ``.<name>.old`` sibling and deleted only once the
    new one is in place, so ``final`` is never a mixture of the two. ``tmp`` and ``final`` must be
    on the same filesystem (``os.replace``).
    """
    tmp, final = Path(tmp), Path(final)
    if final.exists():
        old = final.with_name(f".{final.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


def load_state_dict_checked(module: torch.nn.Module, path: str | os.PathLike, what: str) -> None:
    """Load the safetensors file at ``path`` into ``module``, strictly (no unpickling).

    Keys and shapes are compared first, so a mismatch says exactly what differs instead of
    ``load_state_dict``'s generic error. ``what`` names the module in that message.
    """
    state = load_safetensors(path)
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    if expected != found:
        missing = sorted(set(expected) - set(found))
        unexpected = sorted(set(found) - set(expected))
        reshaped = sorted(k for k in set(expected) & set(found) if expected[k] != found[k])
        raise ValueError(
            f"{Path(path)!s} does not match {what}: missing keys {missing}, unexpected keys "
            f"{unexpected}, shape mismatches {reshaped}. The weights and their config come from "
            "different saves or library versions; save them together with save_pretrained."
        )
    module.load_state_dict(state, strict=True)
