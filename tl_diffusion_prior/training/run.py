"""One training session: the state a checkpoint restores, and the loop over it.

:class:`TrainingRun` holds the model, AdamW, the EMA, the random generators, the history and the
step counters. :meth:`TrainingRun.build` makes them (restoring them from a checkpoint when
resuming) and the validation set-up; :meth:`~TrainingRun.loop` repeats { maybe refill the buffer,
set the learning rate, sample a batch, loss, backward, clip, AdamW step, EMA update }, logging,
validating and checkpointing at fixed intervals; :meth:`~TrainingRun.finish` leaves the EMA weights
in the prior and returns the :class:`~tl_diffusion_prior.training.result.TrainResult`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from tl_diffusion_prior.capture.buffer import ActivationRingBuffer
from tl_diffusion_prior.constants import LOSS_CSV_NAME, LOSS_PNG_NAME
from tl_diffusion_prior.core import distributed
from tl_diffusion_prior.priors.base import DiffusionPrior
from tl_diffusion_prior.training import checkpoint as ckpt
from tl_diffusion_prior.training.config import TrainConfig, get_lr
from tl_diffusion_prior.training.loss_log import plot_loss_curve, write_loss_csv
from tl_diffusion_prior.training.monitor import HISTORY_COLUMNS, LossMonitor
from tl_diffusion_prior.training.result import TrainResult, record_provenance
from tl_diffusion_prior.training.runtime import autocast, derive_seed
from tl_diffusion_prior.training.validation import Validation, setup_validation, validation_loss


@dataclass(eq=False)
class TrainingRun:
    """One training session: what a checkpoint restores, the counters, and the loop over them.

    Attributes:
        model: ``prior.loss`` as a module, in DistributedDataParallel under torchrun.
        ema: a diffusers ``EMAModel`` of the prior's parameters, or None (``ema_decay=0``).
        generators: the ``"batch"`` (buffer rows) and ``"noise"`` (loss noise) generators.
        history: the rows of ``loss.csv``, including those of earlier sessions.
        start_step, elapsed_before: step and wall-clock seconds where this session started.
        sessions: the provenance of each session of the run (``from_step``, and ``to_step`` for
            finished ones), this one last; checkpointed, so a resumed run records every command.
        done: steps completed so far, over all sessions.
        last_checkpoint: the latest checkpoint written or resumed from.
        session_start: ``time.perf_counter()`` when :meth:`loop` started.
    """

    prior: DiffusionPrior
    buffer: ActivationRingBuffer
    config: TrainConfig
    hook: int | tuple[int, ...]
    refill: Callable[[int], Any] | None
    model: nn.Module
    optimizer: torch.optim.Optimizer
    ema: Any
    generators: dict[str, torch.Generator]
    validation: Validation
    history: list[dict[str, Any]] = field(default_factory=list)
    sessions: list[dict[str, Any]] = field(default_factory=list)
    start_step: int = 0
    elapsed_before: float = 0.0
    samples_seen: int = 0
    last_checkpoint: Path | None = None
    done: int = field(init=False)
    session_start: float = field(init=False)
    stopped_reason: str = field(init=False, default="already_complete")

    def __post_init__(self) -> None:
        self.done = self.start_step
        self.session_start = time.perf_counter()

    @classmethod
    def build(
        cls,
        prior: DiffusionPrior,
        buffer: ActivationRingBuffer,
        config: TrainConfig,
        *,
        hook: int | tuple[int, ...],
        refill: Callable[[int], Any] | None,
        state: ckpt.Checkpoint | None,
        val_activations: Tensor | None,
        fit_rows: Tensor | None,
        provenance: dict[str, Any] | None = None,
    ) -> TrainingRun:
        """Model, optimizer, EMA and generators, restored from ``state`` if any; then validation.

        The validation set-up comes last: its rows are drawn from the (restored) buffer.
        """
        prior.train()
        model = _loss_model(prior)
        optimizer = torch.optim.AdamW(
            prior.parameters(), lr=config.lr, betas=config.betas, weight_decay=config.weight_decay
        )
        ema = _make_ema(prior, config)
        rank = distributed.get_rank()
        batch_generator = torch.Generator(device=buffer.device)
        noise_generator = torch.Generator(device=prior.device)
        generators = {
            "batch": batch_generator.manual_seed(derive_seed(config.seed, rank, 1)),
            "noise": noise_generator.manual_seed(derive_seed(config.seed, rank, 2)),
        }
        counters: dict[str, Any] = {}
        earlier: list[dict[str, Any]] = []
        if state is not None:
            ckpt.restore_training_state(
                state,
                optimizer=optimizer,
                ema=ema,
                generators=generators,
                buffer=buffer,
                refill=refill,
            )
            # The sessions before this one end at the checkpoint resumed (later steps are redone);
            # a checkpoint written before sessions were recorded knows only their step range.
            earlier = [dict(session) for session in state.meta.get("sessions", [{"from_step": 0}])]
            earlier[-1]["to_step"] = state.step
            counters = {
                "history": list(state.meta["history"]),
                "start_step": state.step,
                "elapsed_before": float(state.meta["elapsed_s"]),
                "samples_seen": int(state.meta["samples_seen"]),
                "last_checkpoint": state.path,
            }
        this_session = {"from_step": counters.get("start_step", 0), **(provenance or {})}
        counters["sessions"] = [*earlier, this_session]
        saved_reference = state.meta["gaussian_reference"] if state is not None else None
        validation = setup_validation(
            prior, buffer, hook, config, val_activations, fit_rows, saved_reference
        )
        return cls(
            prior, buffer, config, hook, refill, model, optimizer, ema, generators, validation,
            **counters,
        )  # fmt: skip

    # ------------------------------------------------------------------------- derived values
    @property
    def device(self) -> torch.device:
        return self.prior.device

    @property
    def rank(self) -> int:
        return distributed.get_rank()

    @property
    def rows_per_step(self) -> int:
        return self.config.batch_size * distributed.get_world_size()

    @property
    def run_dir(self) -> Path | None:
        return Path(self.config.checkpoint_dir) if self.config.checkpoint_dir else None

    def elapsed_s(self) -> float:
        """Wall-clock seconds of training so far, over all sessions."""
        return self.elapsed_before + time.perf_counter() - self.session_start

    # ------------------------------------------------------------------------------ the loop
    def validate_start(self) -> None:
        """Validate the starting weights: for a design that starts at a known point (the UNet's
        zero-initialised residual on its Gaussian skip), the gain over it is measured with the
        same validation noise, free of the reference's Monte-Carlo error."""
        initial = self.validate()
        self.history.append(
            {**dict.fromkeys(HISTORY_COLUMNS), "step": 0, "elapsed_s": 0.0, "val_loss": initial}
        )
        if self.rank == 0:
            reference = self.validation.reference
            tqdm.write(
                f"step 0: val loss {initial:.4f} | Gaussian reference {reference:.4f} | "
                f"ratio {initial / reference:.3f}"
            )

    def loop(self, callback: Callable[[int], None] | None) -> None:
        """Train to ``config.steps`` or the time budget; log, validate, checkpoint on schedule."""
        config = self.config
        self.session_start = time.perf_counter()
        monitor = LossMonitor(self.device)
        bar = tqdm(
            total=config.steps,
            initial=self.start_step,
            desc="train",
            unit="step",
            disable=not (config.progress and self.rank == 0),
        )
        try:
            for step in range(self.start_step, config.steps):
                lr = self._step(step, monitor)
                self.done = step + 1
                self.samples_seen += self.rows_per_step
                finished = self.done == config.steps
                final = finished or _out_of_time(config, self.session_start, self.done, self.device)
                self._log_and_validate(monitor, bar, lr, final)
                if self.run_dir is not None and (
                    final or (config.checkpoint_every and self.done % config.checkpoint_every == 0)
                ):
                    monitor.check(self.done, self.last_checkpoint)
                    self.last_checkpoint = self.save(self.done)
                bar.update(1)
                if callback is not None:
                    callback(self.done)
                if final:
                    self.stopped_reason = "completed" if finished else "time_budget"
                    break
        finally:
            bar.close()

    def _step(self, step: int, monitor: LossMonitor) -> float:
        """One optimizer step (after a refill when one is due); returns its learning rate."""
        config = self.config
        if config.refill_every and step > 0 and step % config.refill_every == 0:
            self.refill(max(1, int(config.refill_fraction * self.buffer.capacity)))
        lr = get_lr(step, config)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        x = self.buffer.sample(
            config.batch_size, generator=self.generators["batch"], hook=self.hook
        )
        with autocast(config, self.device):
            loss = self.model(x.to(self.device, non_blocking=True), self.generators["noise"])
        loss.backward()
        grad_norm = nn.utils.clip_grad_norm_(self.prior.parameters(), config.grad_clip or math.inf)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.step(self.prior.parameters())
        monitor.add(step, loss, grad_norm)
        return lr

    def _log_and_validate(self, monitor: LossMonitor, bar: tqdm, lr: float, final: bool) -> None:
        """Append this step's history row when it is a log or validation step (or the last)."""
        config, done = self.config, self.done
        elapsed = self.elapsed_s()
        row = None
        if done % config.log_every == 0 or final:
            monitor.check(done, self.last_checkpoint)
            row = monitor.row(done, lr, self.rows_per_step, elapsed)
            bar.set_postfix(loss=f"{row['train_loss']:.4f}", lr=f"{lr:.2e}")
        if final or (config.eval_every and done % config.eval_every == 0):
            monitor.check(done, self.last_checkpoint)
            val = self.validate()
            row = row or {"step": done, "lr": lr, "elapsed_s": elapsed}
            row["val_loss"] = val
            if self.rank == 0:
                reference = self.validation.reference
                bar.write(
                    f"step {done}: val loss {val:.4f} (EMA) | Gaussian reference "
                    f"{reference:.4f} | ratio {val / reference:.3f}"
                )
        if row is not None:
            self.history.append(row)

    # ------------------------------------------------------------------ weights and files
    def ema_weights(self, target: DiffusionPrior) -> DiffusionPrior:
        """Copy the EMA weights (the raw ones without an EMA) into ``target``; returns it."""
        if self.ema is not None:
            self.ema.copy_to(target.parameters())
        else:
            target.load_state_dict(self.prior.state_dict())
        return target

    def validate(self) -> float:
        """The validation loss of the EMA weights."""
        scratch = self.ema_weights(self.validation.scratch)
        return validation_loss(scratch, self.validation.rows, self.config, self.device)

    def save(self, step: int) -> Path:
        """Checkpoint the run at ``step`` and (rank 0) rewrite ``loss.csv`` and its plot."""
        path = ckpt.save_training_state(
            self.run_dir,
            step,
            prior=self.prior,
            optimizer=self.optimizer,
            ema=self.ema,
            generators=self.generators,
            buffer=self.buffer,
            refill=self.refill,
            config=self.config,
            meta={
                "history": self.history,
                "sessions": self.sessions,
                "elapsed_s": self.elapsed_s(),
                "samples_seen": self.samples_seen,
                "gaussian_reference": self.validation.reference,
            },
        )
        if self.rank == 0:
            _write_curves(self.run_dir, self.history, self.validation.reference, self.prior)
        return path

    def finish(self) -> TrainResult:
        """EMA weights into the prior, the result, and its provenance into the prior's config."""
        session_s = time.perf_counter() - self.session_start
        if self.stopped_reason == "already_complete":
            final_val = self.validate()
        else:
            final_val = self.history[-1]["val_loss"]
        self.ema_weights(self.prior)
        self.prior.eval()
        result = TrainResult(
            history=self.history,
            final_val_loss=final_val,
            gaussian_reference=self.validation.reference,
            steps=self.done,
            samples_seen=self.samples_seen,
            samples_per_s=(self.done - self.start_step) * self.rows_per_step / max(session_s, 1e-9),
            elapsed_s=self.elapsed_before + session_s,
            stopped_reason=self.stopped_reason,
            checkpoint=self.last_checkpoint,
        )
        record_provenance(self.prior, self.config, result, self.buffer, self.hook, self.sessions)
        return result


class _LossModule(nn.Module):
    """Routes ``forward`` to ``prior.loss`` so DistributedDataParallel syncs its gradients."""

    def __init__(self, prior: DiffusionPrior):
        super().__init__()
        self.prior = prior

    def forward(self, x: Tensor, generator: torch.Generator) -> Tensor:
        return self.prior.loss(x, generator=generator)


def _loss_model(prior: DiffusionPrior) -> nn.Module:
    """``prior.loss`` as a module, in DistributedDataParallel under torchrun."""
    model: nn.Module = _LossModule(prior)
    if not distributed.is_distributed():
        return model
    device = prior.device
    return nn.parallel.DistributedDataParallel(
        model,
        device_ids=[device] if device.type == "cuda" else None,
        broadcast_buffers=False,  # the normaliser statistics are equal on every rank
    )


def _make_ema(prior: DiffusionPrior, config: TrainConfig):
    if config.ema_decay == 0:
        return None
    from diffusers.training_utils import EMAModel

    return EMAModel(prior.parameters(), decay=config.ema_decay, foreach=True)


def _out_of_time(config: TrainConfig, session_start: float, done: int, device) -> bool:
    if config.time_budget_s is None:
        return False
    over = time.perf_counter() - session_start >= config.time_budget_s
    if not distributed.is_distributed():
        return over
    # Ranks' clocks differ: decide together, and only at log steps, to add no extra syncs.
    if done % config.log_every:
        return False
    return distributed.any_rank(over, device=device)


def _write_curves(run_dir: Path, history: list[dict], reference: float, prior) -> None:
    write_loss_csv(run_dir / LOSS_CSV_NAME, history)
    title = f"{prior.config.architecture} prior, {prior.config.hook_name}"
    plot_loss_curve(run_dir / LOSS_PNG_NAME, history, reference, title=title)
