"""Small helpers for data-parallel training under ``torchrun``.

``torchrun`` (``python -m torch.distributed.run``) starts one process per device and sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous variables; :func:`init_from_env` reads them and
joins the process group (NCCL on CUDA, gloo on CPU). Without those variables every helper falls
back to single-process behaviour, so the same training code runs with and without ``torchrun``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor


@dataclass(frozen=True)
class DistributedEnv:
    """Where this process sits in the job.

    Attributes:
        rank: global rank, 0 for a single process.
        world_size: number of processes, 1 for a single process.
        local_rank: rank on this node; picks the CUDA device.
        device: the device this process trains on.
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise ValueError(f"Environment variable {name} must be an integer, got {value!r}.") from exc


def init_from_env(device: str | torch.device | None = None) -> DistributedEnv:
    """Join the process group that ``torchrun`` describes, or describe a single process.

    Args:
        device: force a device type (``"cpu"`` or ``"cuda"``); ``None`` picks CUDA when available.
            Under torchrun with CUDA each process takes ``cuda:LOCAL_RANK``.

    Returns:
        The rank, world size, local rank and device. Calling it again once the group exists
        returns the same description without re-initialising.
    """
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    if device is None:
        device_type = "cuda" if torch.cuda.is_available() else "cpu"
    else:
        device_type = torch.device(device).type
    if device_type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device='cuda' was requested but CUDA is not available.")
        resolved = torch.device("cuda", local_rank % max(torch.cuda.device_count(), 1))
        torch.cuda.set_device(resolved)
    else:
        resolved = torch.device(device_type)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        kwargs: dict[str, Any] = {"backend": backend}
        if device_type == "cuda":
            kwargs["device_id"] = resolved
        dist.init_process_group(**kwargs)
    if dist.is_initialized():
        rank, world_size = dist.get_rank(), dist.get_world_size()
    return DistributedEnv(rank=rank, world_size=world_size, local_rank=local_rank, device=resolved)


def is_distributed() -> bool:
    """Whether a process group with more than one process is active."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    """True on rank 0 (and in a single process): the rank that writes files and prints."""
    return get_rank() == 0


def barrier() -> None:
    """Wait for every rank; a no-op in a single process."""
    if is_distributed():
        dist.barrier()


def all_reduce_mean(tensor: Tensor) -> Tensor:
    """The mean of ``tensor`` over ranks (a new tensor; the input is left untouched)."""
    out = tensor.detach().clone()
    if is_distributed():
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        out /= dist.get_world_size()
    return out


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """The sum of ``tensor`` over ranks (a new tensor)."""
    out = tensor.detach().clone()
    if is_distributed():
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def any_rank(flag: bool, device: torch.device | str = "cpu") -> bool:
    """True when ``flag`` is True on at least one rank, so every rank takes the same branch."""
    if not is_distributed():
        return bool(flag)
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def cleanup() -> None:
    """Leave the process group if one was joined."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_max(tensor: Tensor) -> Tensor:
    """The elementwise maximum of ``tensor`` over ranks (a new tensor)."""
    out = tensor.detach().clone()
    if is_distributed():
        dist.all_reduce(out, op=dist.ReduceOp.MAX)
    return out


def broadcast_buffers_from_main(module: torch.nn.Module) -> None:
    """Overwrite every buffer of ``module`` with rank 0's, in place; a no-op in a single process.

    For state fitted from each rank's own rows (the UNet's layout and Gaussian skip), which DDP
    does not synchronise (it only broadcasts parameters at construction).
    """
    if is_distributed():
        for buffer in module.buffers():
            dist.broadcast(buffer.data, src=0)
