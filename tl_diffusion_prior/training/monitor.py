"""The training loss, watched on the device: running mean, gradient norm and non-finite steps.

:class:`LossMonitor` keeps the running loss and the first non-finite step on the device, so the
training loop only synchronises at log, validation and checkpoint steps. Its rows (and the
trainer's validation rows) are keyed by :data:`HISTORY_COLUMNS`, the columns of ``loss.csv``
(:mod:`tl_diffusion_prior.training.loss_log`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from tl_diffusion_prior.core import distributed

HISTORY_COLUMNS = (
    "step",
    "lr",
    "train_loss",
    "val_loss",
    "grad_norm",
    "elapsed_s",
    "samples_per_s",
)


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN/inf loss or gradient; the last good checkpoint is left intact.

    Attributes:
        step: the 1-based step whose loss or gradient norm was not finite.
        checkpoint: the last checkpoint written before it (None if there is none).
    """

    def __init__(self, step: int, checkpoint: Path | None):
        self.step = step
        self.checkpoint = checkpoint
        where = f"the last good checkpoint is {checkpoint}" if checkpoint else "no checkpoint"
        super().__init__(
            f"Non-finite loss or gradient norm at step {step}; training stopped ({where}). "
            "Lower lr, keep grad_clip on, or check the buffer for extreme activations (the "
            "capture's outlier filter)."
        )


class LossMonitor:
    """Accumulates losses on the device; only :meth:`check` and :meth:`row` synchronise."""

    def __init__(self, device: torch.device):
        self.loss_sum = torch.zeros((), dtype=torch.float32, device=device)
        self.first_bad = torch.full((), -1, dtype=torch.long, device=device)
        self.grad_norm = torch.zeros((), dtype=torch.float32, device=device)
        self.steps = 0
        self.window_start = time.perf_counter()
        self._checked_at = -1

    def add(self, step: int, loss: Tensor, grad_norm: Tensor) -> None:
        loss = loss.detach().float()
        self.loss_sum += loss
        self.grad_norm = grad_norm.detach().float()
        self.steps += 1
        finite = torch.isfinite(loss) & torch.isfinite(self.grad_norm)
        self.first_bad = torch.where((self.first_bad < 0) & ~finite, step, self.first_bad)

    def check(self, done: int, last_checkpoint: Path | None) -> None:
        """Raise :class:`NonFiniteLossError` if any rank saw a non-finite step so far."""
        if self._checked_at == done:
            return
        bad = int(distributed.all_reduce_max(self.first_bad).item())
        if bad >= 0:
            raise NonFiniteLossError(bad + 1, last_checkpoint)
        self._checked_at = done

    def row(self, done: int, lr: float, rows_per_step: int, elapsed_s: float) -> dict[str, Any]:
        now = time.perf_counter()
        mean = distributed.all_reduce_mean(self.loss_sum / max(self.steps, 1))
        row = {
            "step": done,
            "lr": lr,
            "train_loss": float(mean),
            "val_loss": None,
            "grad_norm": float(self.grad_norm),
            "elapsed_s": elapsed_s,
            "samples_per_s": self.steps * rows_per_step / max(now - self.window_start, 1e-9),
        }
        self.loss_sum.zero_()
        self.steps, self.window_start = 0, now
        return row
