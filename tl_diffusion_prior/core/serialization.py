"""Atomic, pickle-free writes: safetensors for tensors, JSON for everything else.

Every file the package writes goes through here so that a crash mid-write never leaves a torn
checkpoint or prior behind: data goes to a temporary sibling first and is flushed to disk (fsync),
then ``os.replace`` swaps it in and the parent directory is flushed so the rename itself survives a
power cut.

Directories (a saved prior, a checkpoint) are replaced whole by :func:`replace_dir`. On Linux it
swaps the new and the old directory in one ``renameat2(RENAME_EXCHANGE)`` call, so the path holds
the complete old or the complete new directory at every instant. Where that call is unavailable
(another OS, an old kernel or C library, a filesystem without it) it falls back to two renames: the
old directory goes to a hidden ``.<name>.old`` sibling, the new one takes its place. A process
killed between the two leaves nothing at the path but a complete ``.<name>.old``;
:func:`recover_replaced_dir` (called by the next :func:`replace_dir` on that path and by the
command line's output checks) moves it back.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor


def _temp_sibling(path: Path) -> Path:
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(name)


def fsync_path(path: str | os.PathLike) -> None:
    """Flush the file at ``path`` (its data and size) to disk."""
    # Read-write: Windows refuses to flush a read-only handle; POSIX accepts either.
    fd = os.open(path, os.O_RDWR)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush directory ``path``'s entries, so renames into or out of it survive a power cut.

    A no-op where directories cannot be opened (Windows, which has no directory fsync).
    """
    if not hasattr(os, "O_DIRECTORY"):
        return
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
        fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True))


def read_json(path: str | os.PathLike) -> Any:
    """The JSON document at ``path``; a damaged file is an error that names it."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{os.fspath(path)} is not UTF-8 JSON ({error.reason} at byte {error.start}): it is "
            "damaged or not a file this package wrote. Save it again, or restore it from a copy."
        ) from error
    except json.JSONDecodeError as error:
        # Still a JSONDecodeError (callers may catch that), with the path and the fix in front.
        raise json.JSONDecodeError(
            f"{os.fspath(path)} is not valid JSON (damaged, cut short, or not a file this package "
            f"wrote; save it again, or restore it from a copy): {error.msg}",
            error.doc,
            error.pos,
        ) from error


def atomic_save_safetensors(
    path: str | os.PathLike,
    tensors: dict[str, Tensor],
    metadata: dict[str, str] | None = None,
) -> None:
    """Save ``tensors`` (made contiguous, on CPU) to ``path`` atomically, flushed to disk before
    the rename."""
    path = Path(path)
    if path.is_dir():
        # Checked before writing: a large buffer would otherwise be written only to fail the rename.
        raise ValueError(f"{path!s} is a directory; pass a file path to save the tensors to.")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_sibling(path)
    try:
        cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
        save_file(cpu, str(tmp), metadata=metadata)
        fsync_path(tmp)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def _damaged_safetensors(path: str | os.PathLike, error: Exception) -> ValueError:
    return ValueError(
        f"{path!s} is not a readable safetensors file ({error}): it is damaged (e.g. cut short by "
        "an interrupted copy) or not a safetensors file. Save it again, or restore it from a copy."
    )


def load_safetensors(
    path: str | os.PathLike, device: str | torch.device = "cpu"
) -> dict[str, Tensor]:
    if not Path(path).is_file():
        raise FileNotFoundError(f"No safetensors file at {path!s}.")
    try:
        return load_file(str(path), device=str(device))
    except SafetensorError as error:
        raise _damaged_safetensors(path, error) from error


def read_safetensors_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``__metadata__`` of the safetensors file at ``path`` (``{}`` when it has none); a
    missing or damaged file is an error that names it. Reads the header only."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"No safetensors file at {path!s}.")
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except SafetensorError as error:
        raise _damaged_safetensors(path, error) from error


def safetensors_metadata(path: str | os.PathLike) -> dict[str, str] | None:
    """The ``__metadata__`` of the safetensors file at ``path`` (``{}`` when it has none), or None
    when ``path`` is not a readable safetensors file. Reads the header only."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError):
        return None


@contextlib.contextmanager
def atomic_directory(final_dir: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``final_dir`` only if the block succeeds.

    An existing ``final_dir`` is kept until the new one is complete, then swapped out by
    :func:`replace_dir`, so a reader sees either the old or the new directory, never a mixture and
    never nothing.
    """
    final_dir = Path(final_dir)
    _check_replaceable_dir(final_dir)
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final_dir.name}.", suffix=".tmp", dir=final_dir.parent))
    try:
        yield tmp
        replace_dir(tmp, final_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _check_replaceable_dir(final: Path) -> None:
    if os.path.lexists(final) and not final.is_dir():
        raise ValueError(
            f"{final!s} exists and is not a directory; a directory is saved there. Move or delete "
            "it, or choose another path."
        )


def _remove(path: Path) -> None:
    """Delete ``path`` whatever it is (a directory tree, a file or a symlink), if it exists."""
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


def _old_sibling(final: Path) -> Path:
    return final.with_name(f".{final.name}.old")


def _load_renameat2() -> Any:
    """glibc's ``renameat2`` (2.28+), or None where the C library has none."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    except OSError:
        return None
    function = getattr(libc, "renameat2", None)
    if function is not None:
        int_, path = ctypes.c_int, ctypes.c_char_p
        function.argtypes = [int_, path, int_, path, ctypes.c_uint]
        function.restype = ctypes.c_int
    return function


_RENAMEAT2 = _load_renameat2() if os.name == "posix" else None
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def exchange_paths(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Swap the directory entries ``a`` and ``b`` in one atomic step (``renameat2`` with
    ``RENAME_EXCHANGE``). Both must exist, on one filesystem.

    Returns False, changing nothing, where the exchange is unavailable (no ``renameat2`` in the C
    library, a kernel or filesystem without ``RENAME_EXCHANGE``); raises OSError on other failures.
    """
    if _RENAMEAT2 is None:
        return False
    result = _RENAMEAT2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, f"cannot swap {a!s} and {b!s}: {os.strerror(code)}")


def recover_replaced_dir(final: str | os.PathLike) -> bool:
    """Undo a :func:`replace_dir` fallback cut short between its two renames.

    When ``final`` is missing and its hidden ``.<name>.old`` sibling (always a complete directory:
    it is renamed whole) exists, the sibling is moved back to ``final``. Returns whether it did.
    """
    final = Path(final)
    old = _old_sibling(final)
    if os.path.lexists(final) or not old.is_dir():
        return False
    os.replace(old, final)
    fsync_dir(final.parent)
    return True


def replace_dir(tmp: str | os.PathLike, final: str | os.PathLike) -> None:
    """Move the complete directory ``tmp`` to ``final``, replacing any directory already there.

    ``tmp``'s files must already be on disk (every writer here flushes them). On Linux the old and
    the new directory are exchanged atomically (see the module docstring) and the old one is then
    deleted; elsewhere the old one goes to ``.<name>.old`` first, which
    :func:`recover_replaced_dir` restores if the process dies before the new one is in place.
    ``tmp`` and ``final`` must be on the same filesystem.
    """
    tmp, final = Path(tmp), Path(final)
    _check_replaceable_dir(final)
    fsync_dir(tmp)
    recover_replaced_dir(final)
    old = _old_sibling(final)
    if not os.path.lexists(final):
        os.replace(tmp, final)
    elif exchange_paths(tmp, final):
        # ``tmp`` now holds the old directory.
        fsync_dir(final.parent)
        _remove(tmp)
        return
    else:
        _remove(old)
        os.replace(final, old)
        os.replace(tmp, final)
    fsync_dir(final.parent)
    _remove(old)


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
