"""What a training run did (:class:`TrainResult`) and its record in the prior's training record."""

from __future__ import annotations

import math
import platform
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from tl_diffusion_prior.capture.buffer import ActivationRingBuffer
from tl_diffusion_prior.core import distributed
from tl_diffusion_prior.core.precision import cpu_has_fast_bf16
from tl_diffusion_prior.priors.base import DiffusionPrior
from tl_diffusion_prior.training.config import TrainConfig


@dataclass
class TrainResult:
    """What a training run did.

    Attributes:
        history: one dict per logged or evaluated step, keyed by
            :data:`~tl_diffusion_prior.training.monitor.HISTORY_COLUMNS` (None where not
            measured).
        final_val_loss: validation loss of the EMA weights at the end.
        gaussian_reference: the loss of the Gaussian-optimal denoiser under the same objective.
        steps: optimizer steps completed in total (including those before a resume).
        samples_seen: training rows consumed, over all ranks.
        samples_per_s: training throughput of this session, over all ranks.
        elapsed_s: wall-clock seconds of training, summed over resumed sessions.
        stopped_reason: ``"completed"``, ``"time_budget"`` or ``"already_complete"``.
        checkpoint: the last checkpoint written or resumed from, if any.
    """

    history: list[dict[str, Any]]
    final_val_loss: float
    gaussian_reference: float
    steps: int
    samples_seen: int
    samples_per_s: float
    elapsed_s: float
    stopped_reason: str
    checkpoint: Path | None = None

    @property
    def val_over_reference(self) -> float:
        """Held-out loss over the Gaussian reference; below 1 beats every Gaussian model."""
        if self.gaussian_reference <= 0:
            return math.nan
        return self.final_val_loss / self.gaussian_reference

    @property
    def initial_val_loss(self) -> float | None:
        """Validation loss of the weights the run started from (measured with the same noise)."""
        starts = (r for r in self.history if r["step"] == 0 and r.get("val_loss") is not None)
        return next((r["val_loss"] for r in starts), None)


def record_provenance(
    prior: DiffusionPrior,
    config: TrainConfig,
    result: TrainResult,
    buffer: ActivationRingBuffer,
    hook: int | tuple[int, ...],
    sessions: list[dict[str, Any]],
) -> None:
    """Record what the run did, on what and where in the prior's ``training_record``: the
    buffer's provenance (the source model's name and weight fingerprint, which
    :meth:`DiffusionPrior.check_compatible` compares), the last session's provenance (command,
    corpus, ...) and, for a resumed run, the earlier sessions' (``earlier_sessions``)."""
    training = {
        "steps": result.steps,
        "samples_seen": result.samples_seen,
        "world_size": distributed.get_world_size(),
        "initial_val_loss": result.initial_val_loss,
        "final_val_loss": result.final_val_loss,
        "gaussian_reference_loss": result.gaussian_reference,
        "val_over_reference": result.val_over_reference,
        "elapsed_s": round(result.elapsed_s, 3),
        "samples_per_s": round(result.samples_per_s, 1),
        "stopped_reason": result.stopped_reason,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "device": _describe_device(prior.device),
        # A multi-layer prior trained on several of the buffer's hooks records all of them.
        "hook": [buffer.hook_names[i] for i in hook]
        if isinstance(hook, tuple)
        else buffer.hook_names[hook],
        "buffer_capacity": buffer.capacity,
        # The model the rows came from (name, weight fingerprint), compared when the prior is used.
        **buffer.provenance,
        "train_config": {k: v for k, v in config.to_dict().items() if k != "checkpoint_dir"},
    }
    *earlier, last = sessions
    training.update({k: v for k, v in last.items() if k != "from_step"})
    if earlier:
        training["earlier_sessions"] = earlier
    prior.record_training(training)


def _describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    bf16 = "hardware bf16" if cpu_has_fast_bf16() else "no hardware bf16"
    return (
        f"{device} ({platform.machine()}, {torch.get_num_threads()} threads, {bf16}, "
        f"torch {torch.__version__})"
    )
