"""Checks on output paths, run before any work starts, so that nothing is lost or overwritten.

A command that writes a result (a prior directory, a buffer file, a report folder) calls
:func:`check_output_dir` or :func:`check_output_file` first. Both raise ValueError, naming the
option, the path and the fix, when the path

* is the current directory or one that contains it (``--out .``),
* is a file where a directory is needed, or a directory where a file is needed,
* already holds something that is not one of our own outputs (what counts as ours is the caller's
  ``is_ours`` test: it recognises our files, e.g. a ``config.json`` naming a registered architecture
  next to ``model.safetensors``),
* already holds one of our outputs and ``overwrite`` is False (the ``--overwrite`` flag), or
* cannot be created: a parent is a file, or the nearest existing parent cannot be written.

Empty files and empty directories count as free. Outputs saved whole (a prior, a buffer) are then
replaced atomically by :mod:`~tl_diffusion_prior.core.serialization`; report folders, which are
written piece by piece, are replaced through :func:`set_aside`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Collection, Iterator, Mapping
from pathlib import Path

from tl_diffusion_prior.constants import CONFIG_NAME, WEIGHTS_NAME
from tl_diffusion_prior.core.serialization import (
    read_json,
    recover_replaced_dir,
    safetensors_metadata,
)

IsOurs = Callable[[Path], bool]


def previous_sibling(path: str | os.PathLike) -> Path:
    """Where :func:`set_aside` keeps the previous output while a new one is written."""
    path = Path(path)
    return path.with_name(f".{path.name}.previous")


def check_output_dir(
    path: str | os.PathLike,
    *,
    overwrite: bool,
    what: str,
    is_ours: IsOurs,
    flag: str = "--overwrite",
) -> Path:
    """Check that a directory output may be written to ``path``; returns it as a Path.

    Args:
        path: where the directory will be saved.
        overwrite: whether replacing one of our own outputs there was asked for.
        what: the option and the kind of output, for messages (``"--out (a prior directory)"``).
        is_ours: tells whether an existing, non-empty directory is one of our outputs.
        flag: the option that sets ``overwrite``, for messages.
    """
    path = Path(path)
    _check_not_cwd(path, what)
    # A replace cut short between its two renames (where the atomic swap is unavailable).
    recover_replaced_dir(path)
    previous = previous_sibling(path)
    if os.path.lexists(previous):
        raise ValueError(
            f"{what}: {previous} holds the previous output of {path}, set aside by a run that did "
            f"not finish ({path} may hold that run's partial output). Move {previous} back to "
            f"{path} or delete it, then run again."
        )
    if os.path.lexists(path) and not path.is_dir():
        raise ValueError(
            f"{what}: {path} is a file, but a directory is saved there. Choose another path, or "
            "move the file away."
        )
    if path.is_dir() and any(path.iterdir()):
        _check_replace(path, overwrite, what, is_ours(path), flag)
    _check_parent_writable(path, what)
    return path


def check_output_file(
    path: str | os.PathLike,
    *,
    overwrite: bool,
    what: str,
    is_ours: IsOurs,
    flag: str = "--overwrite",
) -> Path:
    """Check that a single-file output may be written to ``path``; arguments as for
    :func:`check_output_dir`. Returns ``path`` as a Path."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(
            f"{what}: {path} is a directory, but a file is saved there. Name a file, e.g. "
            f"{path / 'buffer.safetensors'}."
        )
    if path.is_file() and path.stat().st_size > 0:
        _check_replace(path, overwrite, what, is_ours(path), flag)
    elif os.path.lexists(path) and not path.is_file():
        raise ValueError(f"{what}: {path} exists and is not a regular file; choose another path.")
    _check_parent_writable(path, what)
    return path


def check_not_inside(inner: str | os.PathLike, outer: str | os.PathLike, what: str) -> None:
    """Refuse ``inner`` when it is ``outer`` or lies inside it (it would be replaced with it)."""
    inner_abs, outer_abs = Path(inner).resolve(), Path(outer).resolve()
    if inner_abs == outer_abs or outer_abs in inner_abs.parents:
        raise ValueError(
            f"{what}: {inner} is inside {outer}, which is replaced whole when the result is "
            "saved; choose a path outside it (the default is a sibling)."
        )


def is_pretrained_dir(
    path: Path,
    registry_key: str,
    registry: Collection[str] | Mapping[str, object],
    extra_names: Collection[str] = (),
) -> bool:
    """Whether ``path`` is a ``save_pretrained`` directory of a registered class, and nothing else.

    It must hold ``config.json`` (a JSON object whose ``registry_key`` field names an entry of
    ``registry``) and ``model.safetensors`` (a readable safetensors file), and no other entries than
    ``extra_names`` (the training record, loss curves), so that replacing it loses nothing else.
    """
    names = {child.name for child in path.iterdir()}
    required = {CONFIG_NAME, WEIGHTS_NAME}
    if not required <= names or not names <= required | set(extra_names):
        return False
    try:
        config = read_json(path / CONFIG_NAME)
    except (OSError, ValueError):
        return False
    return (
        isinstance(config, dict)
        and config.get(registry_key) in registry
        and safetensors_metadata(path / WEIGHTS_NAME) is not None
    )


def holds_only(path: Path, names: Collection[str]) -> bool:
    """Whether every entry of directory ``path`` is named in ``names`` (a report folder's files)."""
    return all(child.name in names for child in path.iterdir())


@contextlib.contextmanager
def set_aside(path: str | os.PathLike) -> Iterator[Path]:
    """Write a new output folder at ``path`` while the previous one waits at a hidden sibling.

    For outputs written piece by piece into their final folder (report folders), which cannot be
    built elsewhere and swapped in: an existing ``path`` is renamed to ``.<name>.previous`` (see
    :func:`previous_sibling`) for the duration of the block. When the block succeeds it is deleted;
    when it raises, the partial output is deleted and the previous folder moved back. A process
    killed meanwhile leaves it at the hidden name, which :func:`check_output_dir` then reports.
    """
    path = Path(path)
    previous = previous_sibling(path)
    had_previous = path.is_dir()
    if had_previous:
        os.replace(path, previous)
    try:
        yield path
    except BaseException:
        if had_previous:
            shutil.rmtree(path, ignore_errors=True)
            os.replace(previous, path)
        raise
    if had_previous:
        shutil.rmtree(previous, ignore_errors=True)


def _check_not_cwd(path: Path, what: str) -> None:
    resolved, cwd = path.resolve(), Path.cwd().resolve()
    if resolved == cwd or resolved in cwd.parents:
        raise ValueError(
            f"{what}: {str(path)!r} is the current directory or contains it, which would be "
            "replaced whole. Name a new folder, e.g. ./prior."
        )


def _check_replace(path: Path, overwrite: bool, what: str, ours: bool, flag: str) -> None:
    if not ours:
        raise ValueError(
            f"{what}: {path} already exists and is not one of this package's outputs; refusing "
            "to replace it. Choose a new path (or an empty directory), or move it away."
        )
    if not overwrite:
        raise ValueError(
            f"{what}: {path} already holds a previous result. Pass {flag} to replace it (the old "
            "one is kept until the new one is complete), or choose another path."
        )


def _check_parent_writable(path: Path, what: str) -> None:
    """The nearest existing parent of ``path`` must be a directory we can create entries in."""
    parent = path.absolute().parent
    while not os.path.lexists(parent):
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(
            f"{what}: {path} cannot be created because {parent} is a file, not a directory. "
            "Choose another path."
        )
    # Create and delete a probe rather than trust permission bits (read-only mounts, ACLs, root).
    try:
        probe = tempfile.mkdtemp(prefix=".tl-diffusion-prior-probe-", dir=parent)
    except OSError as exc:
        raise ValueError(
            f"{what}: cannot write in {parent} ({exc.strerror}), so {path} cannot be saved. "
            "Choose a writable location."
        ) from exc
    os.rmdir(probe)
