"""Will it fit? Memory and disk estimated against what is free, before anything is allocated.

A ring buffer is one preallocated tensor, so its size is known before capture starts; so is the
size of the file it is saved to. Asking for more than the device or the disk has (a typo such as
``--n-activations 1000000000000``) should be a clear error at once, not an attempted petabyte
allocation or a disk that fills up after the whole capture has run.

What is free: ``torch.cuda.mem_get_info`` on CUDA, ``MemAvailable`` from ``/proc/meminfo`` (or
``os.sysconf``) for CPU memory, ``shutil.disk_usage`` for disk. Where it cannot be told (another
accelerator, another OS) the check passes: it refuses only what surely cannot fit.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch


def format_bytes(n: int) -> str:
    """``n`` bytes in the unit a person reads (``"2.3 PiB"``, ``"512.0 MiB"``)."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024:
            return f"{value:.1f} {unit}" if unit != "B" else f"{int(value)} B"
        value /= 1024
    return f"{value:.1f} PiB"


def tensor_bytes(shape: tuple[int, ...], dtype: torch.dtype) -> int:
    """Bytes of a dense tensor of ``shape`` and ``dtype``."""
    n = dtype.itemsize
    for size in shape:
        n *= int(size)
    return n


def _cpu_available_bytes() -> int | None:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # the kernel reports kB
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def available_memory(device: torch.device | str) -> int | None:
    """Free bytes where a tensor on ``device`` would live, or None where that cannot be told."""
    device = torch.device(device)
    if device.type == "cpu":
        return _cpu_available_bytes()
    if device.type == "cuda" and torch.cuda.is_available():
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    return None


def check_fits_in_memory(n_bytes: int, device: torch.device | str, what: str, fix: str) -> None:
    """Refuse to allocate ``n_bytes`` for ``what`` on ``device`` when less than that is free.

    ``fix`` says which setting to lower (e.g. ``"lower capacity (--n-activations)"``).
    """
    free = available_memory(device)
    if free is not None and n_bytes > free:
        raise ValueError(
            f"{what} needs {format_bytes(n_bytes)} on {torch.device(device)}, but only "
            f"{format_bytes(free)} is free there; {fix}."
        )


def _existing_ancestor(path: Path) -> Path:
    path = path.absolute()
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(path.anchor or ".")


def check_fits_on_disk(n_bytes: int, path: str | os.PathLike, what: str, fix: str) -> None:
    """Refuse to write about ``n_bytes`` for ``what`` at ``path`` when its disk has less free.

    ``path`` need not exist yet: the disk is the one of its nearest existing parent. An atomic
    save writes the new file beside the old one, so an old file at ``path`` does not count as free.
    """
    free = shutil.disk_usage(_existing_ancestor(Path(path))).free
    if n_bytes > free:
        raise ValueError(
            f"{what} at {os.fspath(path)} needs about {format_bytes(n_bytes)} of disk, but only "
            f"{format_bytes(free)} is free there; {fix}."
        )
