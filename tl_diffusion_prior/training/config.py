"""The training hyperparameters and the learning-rate schedule (a pure function of the step)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import ClassVar

from tl_diffusion_prior.core.config import ConfigBase
from tl_diffusion_prior.core.validation import check_choice, check_float, check_int

AUTOCAST_MODES = ("auto", "bf16", "off")


@dataclass
class TrainConfig(ConfigBase):
    """Hyperparameters of :func:`~tl_diffusion_prior.training.trainer.train_prior`.

    The defaults follow the paper's recipe (AdamW, 1 % linear warm-up, cosine to 0.1 x lr, grad
    clip 1.0, bf16 autocast on GPU) with a higher peak lr suited to the short runs of this project
    (the paper uses 5e-5 at batch 4096 for ~250k steps) and an EMA of the weights.

    Attributes:
        steps: total optimizer steps (a resumed run continues up to this number).
        batch_size: rows per step and per rank.
        lr: peak learning rate.
        weight_decay: AdamW decoupled weight decay.
        betas: AdamW betas.
        warmup_fraction: fraction of ``steps`` with a linear warm-up from ~0 to ``lr``.
        min_lr_ratio: the cosine decays to ``min_lr_ratio * lr`` at the last step.
        grad_clip: max global gradient norm; None or 0 disables clipping (the norm is still
            logged).
        ema_decay: EMA decay of the weights (diffusers' ``EMAModel``, with its ``(1+n)/(10+n)``
            warm-up); 0 disables the EMA. The EMA weights are validated, saved and returned.
        log_every: steps between train-loss log rows (each costs one device sync).
        eval_every: steps between validation losses; 0 evaluates only at the end.
        val_size: validation rows: the first ``val_size`` held-out rows passed to ``train_prior``,
            or a fixed draw of that many buffer rows when none are passed.
        checkpoint_every: steps between checkpoints; 0 only checkpoints at the end. Needs
            ``checkpoint_dir``.
        checkpoint_dir: run directory for checkpoints and the loss curve (CSV and PNG); None writes
            nothing to disk.
        keep_checkpoints: how many of the most recent checkpoints to keep.
        seed: seeds the batch, noise and validation generators (derived per rank).
        time_budget_s: wall-clock seconds this session may train; when spent, training stops early
            after a final validation and checkpoint (``stopped_reason == "time_budget"``).
        refill_every: call ``refill`` every this many steps; 0 never refills.
        refill_fraction: each refill captures this fraction of the buffer's capacity.
        autocast: ``"auto"`` (bf16 on CUDA GPUs and CPUs that compute it natively, else off),
            ``"bf16"`` or ``"off"``.
        progress: show a tqdm progress bar with the loss (rank 0 only).
    """

    unknown_keys_label: ClassVar[str] = "TrainConfig keys"

    steps: int = 2000
    batch_size: int = 1024
    lr: float = 5e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_fraction: float = 0.01
    min_lr_ratio: float = 0.1
    grad_clip: float | None = 1.0
    ema_decay: float = 0.999
    log_every: int = 50
    eval_every: int = 500
    val_size: int = 8192
    checkpoint_every: int = 1000
    checkpoint_dir: str | os.PathLike | None = None
    keep_checkpoints: int = 1
    seed: int = 0
    time_budget_s: float | None = None
    refill_every: int = 0
    refill_fraction: float = 0.25
    autocast: str = "auto"
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "log_every", "val_size", "keep_checkpoints"):
            check_int(name, getattr(self, name), minimum=1)
        for name in ("eval_every", "checkpoint_every", "refill_every", "seed"):
            check_int(name, getattr(self, name), minimum=0)
        check_float("lr", self.lr, minimum=0.0, min_open=True)
        check_float("weight_decay", self.weight_decay, minimum=0.0)
        check_float("warmup_fraction", self.warmup_fraction, minimum=0.0, maximum=1.0)
        check_float("min_lr_ratio", self.min_lr_ratio, minimum=0.0, maximum=1.0)
        check_float("ema_decay", self.ema_decay, minimum=0.0, maximum=1.0, max_open=True)
        check_float(
            "refill_fraction", self.refill_fraction, minimum=0.0, maximum=1.0, min_open=True
        )
        if self.grad_clip is not None:
            check_float("grad_clip", self.grad_clip, minimum=0.0)
        if self.time_budget_s is not None:
            check_float("time_budget_s", self.time_budget_s, minimum=0.0, min_open=True)
        betas = tuple(self.betas)
        if len(betas) != 2:
            raise ValueError(f"betas must be two floats in [0, 1), got {self.betas!r}.")
        self.betas = tuple(
            check_float(f"betas[{i}]", b, minimum=0.0, maximum=1.0, max_open=True)
            for i, b in enumerate(betas)
        )
        check_choice("autocast", self.autocast, AUTOCAST_MODES)
        if self.checkpoint_dir is not None:
            self.checkpoint_dir = str(self.checkpoint_dir)

    @property
    def warmup_steps(self) -> int:
        return round(self.warmup_fraction * self.steps)


def get_lr(step: int, config: TrainConfig) -> float:
    """Learning rate for 0-based ``step``: linear warm-up, then cosine down to the floor.

    Warm-up runs over ``config.warmup_steps`` steps, rising linearly to ``lr``; the cosine then
    reaches ``min_lr_ratio * lr`` exactly at the last step (``config.steps - 1``) and stays there.
    """
    peak = config.lr
    floor = config.min_lr_ratio * peak
    warmup = config.warmup_steps
    if step < warmup:
        return peak * (step + 1) / (warmup + 1)
    decay_steps = config.steps - 1 - warmup
    if decay_steps <= 0:
        return peak
    progress = min(1.0, (step - warmup) / decay_steps)
    return floor + 0.5 * (1.0 + math.cos(math.pi * progress)) * (peak - floor)
