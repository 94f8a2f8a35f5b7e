"""Stage 4: train a diffusion prior on the activations in a ring buffer.

``train_prior`` is one loop that reads top to bottom: fix the normalisation from the buffer's
running statistics, then repeat { maybe refill the buffer, set the learning rate, sample a batch,
loss, backward, clip, AdamW step, EMA update }, logging, validating (EMA weights, fixed noise, next
to the Gaussian reference) and checkpointing at fixed intervals. Every random draw comes from a
seeded generator whose state is checkpointed, so an interrupted and resumed run ends with
bit-identical weights. Under ``torchrun`` the prior is wrapped in DistributedDataParallel and each
rank samples its own buffer; rank 0 writes the shared files.

The recipe follows the paper (AdamW, 1 % linear warm-up then cosine to 0.1 x lr, grad clip 1.0,
bf16 autocast on GPU) and adds an EMA of the weights, which is what gets validated and saved.
The command line (``tl-diffusion-prior train``) is in :mod:`tl_diffusion_prior.cli.train`.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor, nn
from tqdm.auto import tqdm

from tl_diffusion_prior.capture.buffer import ActivationRingBuffer
from tl_diffusion_prior.constants import LOSS_CSV_NAME, LOSS_PNG_NAME
from tl_diffusion_prior.core import distributed
from tl_diffusion_prior.priors.base import DiffusionPrior
from tl_diffusion_prior.training import checkpoint as ckpt
from tl_diffusion_prior.training.config import TrainConfig, get_lr
from tl_diffusion_prior.training.gaussian_reference import gaussian_reference
from tl_diffusion_prior.training.loss_curve import (
    HISTORY_COLUMNS,
    LossMonitor,
    plot_loss_curve,
    write_loss_csv,
)

# Training rows the Gaussian reference is fitted on, also handed to a design's `fit_data` (the
# UNet's layout and Gaussian skip).
FIT_ROWS = 32768
# Config fields that may change between an interrupted run and its resumption without a warning.
_RESUMABLE_CHANGES = {
    "progress",
    "time_budget_s",
    "checkpoint_dir",
    "log_every",
    "eval_every",
    "checkpoint_every",
    "keep_checkpoints",
}


@dataclass
class TrainResult:
    """What a training run did.

    Attributes:
        history: one dict per logged or evaluated step, keyed by
            :data:`~tl_diffusion_prior.training.loss_curve.HISTORY_COLUMNS` (None where not
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


class _LossModule(nn.Module):
    """Routes ``forward`` to ``prior.loss`` so DistributedDataParallel syncs its gradients."""

    def __init__(self, prior: DiffusionPrior):
        super().__init__()
        self.prior = prior

    def forward(self, x: Tensor, generator: torch.Generator) -> Tensor:
        return self.prior.loss(x, generator=generator)


def train_prior(
    prior: DiffusionPrior,
    buffer: ActivationRingBuffer,
    config: TrainConfig,
    *,
    val_activations: Float[Tensor, "n d_model"] | None = None,
    refill: Callable[[int], Any] | None = None,
    resume: bool | str | Path = True,
    hook: str | int | None = None,
    provenance: dict[str, Any] | None = None,
    callback: Callable[[int], None] | None = None,
) -> TrainResult:
    """Train ``prior`` in place on rows sampled from ``buffer``; it ends holding the EMA weights.

    Args:
        prior: the prior to train, on the device it should train on.
        buffer: the activations; under torchrun each rank passes the buffer of its own shard.
        config: the :class:`TrainConfig`.
        val_activations: held-out raw activations for the validation loss and the Gaussian
            reference; without them both use a fixed draw of ``config.val_size`` buffer rows
            (not held out).
        refill: called as ``refill(n_rows)`` every ``config.refill_every`` steps (see
            :func:`make_refill`); its ``state_dict()``/``load_state_dict()``, if it has them, are
            checkpointed.
        resume: True continues from the latest checkpoint in ``config.checkpoint_dir`` when there
            is one; False starts fresh and refuses a directory that already holds checkpoints; a
            path resumes from that checkpoint (or the latest one in that run directory).
        hook: which of the buffer's hooks to train on (default: its only one, or the prior's).
        provenance: extra JSON-able facts (corpus, tokens, model) for ``prior.config.training``.
        callback: called with the number of completed steps after each step (after that step's
            checkpoint); an exception it raises interrupts training as a crash would.

    Raises:
        NonFiniteLossError: the loss or gradient norm became NaN/inf.
        ValueError: an empty buffer, mismatched widths or inconsistent resume settings.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}.")
    if not isinstance(prior, DiffusionPrior):
        raise TypeError(f"prior must be a DiffusionPrior, got {type(prior).__name__}.")
    if buffer.d_model != prior.config.d_model:
        raise ValueError(
            f"The buffer holds d_model={buffer.d_model} activations but the prior models "
            f"d_model={prior.config.d_model}; build the prior for this model's width."
        )
    hook_index = _resolve_hook(buffer, prior, hook)
    try:
        json.dumps(provenance)
    except TypeError as exc:
        raise ValueError(
            f"provenance must be JSON-serialisable (it is saved in the prior's config): {exc}"
        ) from exc
    if config.refill_every and refill is None:
        raise ValueError("config.refill_every is set but no refill was passed; see make_refill.")
    rank, world_size = distributed.get_rank(), distributed.get_world_size()
    device = prior.device
    run_dir = Path(config.checkpoint_dir) if config.checkpoint_dir else None
    resume_path = ckpt.resolve_resume(config.checkpoint_dir, resume)
    state = ckpt.load_checkpoint(resume_path) if resume_path is not None else None
    if state is None and buffer.num_pushed == 0:
        raise ValueError(
            "The buffer is empty: fill it first (tl_diffusion_prior.capture.capture.fill_buffer)."
        )

    # 1. Normalisation from the running statistics of every row pushed so far (on all ranks),
    # then any data-dependent parts of the design (the UNet's layout and Gaussian skip).
    if state is not None:
        ckpt.load_prior_weights(prior, state)
        _warn_on_config_change(state.meta["config"], config)
    fit_rows = None
    if state is None:
        generator = torch.Generator(device=buffer.device).manual_seed(_seed(config.seed, 4))
        fit_rows = buffer.sample(FIT_ROWS, generator=generator, hook=hook_index)
    if state is None and not prior.normalizer.is_fitted:
        prior.set_normalization(*_global_normalization(buffer, hook_index))
        prior.fit_data(fit_rows)
        # Each rank fitted on its own rows; rank 0's fit is the one every rank trains.
        distributed.broadcast_buffers_from_main(prior)

    # 2. Model, optimizer, EMA, generators; then everything a checkpoint restores.
    prior.train()
    model: nn.Module = _LossModule(prior)
    if distributed.is_distributed():
        model = nn.parallel.DistributedDataParallel(
            model,
            device_ids=[device] if device.type == "cuda" else None,
            broadcast_buffers=False,  # the normaliser statistics are equal on every rank
        )
    optimizer = torch.optim.AdamW(
        prior.parameters(), lr=config.lr, betas=config.betas, weight_decay=config.weight_decay
    )
    ema = _make_ema(prior, config)
    generators = {
        "batch": torch.Generator(device=buffer.device).manual_seed(_seed(config.seed, rank, 1)),
        "noise": torch.Generator(device=device).manual_seed(_seed(config.seed, rank, 2)),
    }
    history: list[dict[str, Any]] = []
    start_step, elapsed_before, samples_seen = 0, 0.0, 0
    if state is not None:
        ckpt.restore_training_state(
            state,
            optimizer=optimizer,
            ema=ema,
            generators=generators,
            buffer=buffer,
            refill=refill,
        )
        history = list(state.meta["history"])
        start_step = state.step
        elapsed_before = float(state.meta["elapsed_s"])
        samples_seen = int(state.meta["samples_seen"])

    # 3. Validation rows and the Gaussian reference: a Gaussian fitted on training rows, scored on
    # the validation rows (a resumed run keeps the one its first session computed).
    eval_prior = copy.deepcopy(prior).eval()
    val_rows = _validation_rows(buffer, hook_index, val_activations, config, rank)
    if state is not None:
        reference = float(state.meta["gaussian_reference"])
    else:
        reference = gaussian_reference(prior, val_rows, fit_activations=fit_rows).loss
        del fit_rows

    def ema_weights(target: DiffusionPrior) -> DiffusionPrior:
        if ema is not None:
            ema.copy_to(target.parameters())
        else:
            target.load_state_dict(prior.state_dict())
        return target

    def save(step: int) -> Path:
        path = ckpt.save_training_state(
            run_dir,
            step,
            prior=prior,
            optimizer=optimizer,
            ema=ema,
            generators=generators,
            buffer=buffer,
            refill=refill,
            config=config,
            meta={
                "history": history,
                "elapsed_s": elapsed_before + time.perf_counter() - session_start,
                "samples_seen": samples_seen,
                "gaussian_reference": reference,
            },
        )
        if rank == 0:
            _write_curves(run_dir, history, reference, prior)
        return path

    # 4. The loop, after the validation loss of the starting weights: for a design that starts at
    # a known point (the UNet's zero-initialised residual on its Gaussian skip) the gain over it
    # is measured with the same validation noise, free of the reference's Monte-Carlo error.
    if state is None:
        initial = _validation_loss(ema_weights(eval_prior), val_rows, config, device)
        history.append(
            {**dict.fromkeys(HISTORY_COLUMNS), "step": 0, "elapsed_s": 0.0, "val_loss": initial}
        )
        if rank == 0:
            tqdm.write(
                f"step 0: val loss {initial:.4f} | Gaussian reference {reference:.4f} | "
                f"ratio {initial / reference:.3f}"
            )
    session_start = time.perf_counter()
    monitor = LossMonitor(device)
    rows_per_step = config.batch_size * world_size
    refill_rows = max(1, int(config.refill_fraction * buffer.capacity))
    last_checkpoint = resume_path
    stopped_reason = "already_complete"
    done = start_step
    bar = tqdm(
        total=config.steps,
        initial=start_step,
        desc="train",
        unit="step",
        disable=not (config.progress and rank == 0),
    )
    try:
        for step in range(start_step, config.steps):
            if config.refill_every and step > 0 and step % config.refill_every == 0:
                refill(refill_rows)
            lr = get_lr(step, config)
            for group in optimizer.param_groups:
                group["lr"] = lr

            x = buffer.sample(config.batch_size, generator=generators["batch"], hook=hook_index)
            with _autocast(config, device):
                loss = model(x.to(device, non_blocking=True), generators["noise"])
            loss.backward()
            grad_norm = nn.utils.clip_grad_norm_(prior.parameters(), config.grad_clip or math.inf)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if ema is not None:
                ema.step(prior.parameters())

            done = step + 1
            samples_seen += rows_per_step
            monitor.add(step, loss, grad_norm)
            finished = done == config.steps
            final = finished or _out_of_time(config, session_start, done, device)
            elapsed = elapsed_before + time.perf_counter() - session_start

            row = None
            if done % config.log_every == 0 or final:
                monitor.check(done, last_checkpoint)
                row = monitor.row(done, lr, rows_per_step, elapsed)
                bar.set_postfix(loss=f"{row['train_loss']:.4f}", lr=f"{lr:.2e}")
            if final or (config.eval_every and done % config.eval_every == 0):
                monitor.check(done, last_checkpoint)
                val = _validation_loss(ema_weights(eval_prior), val_rows, config, device)
                row = row or {"step": done, "lr": lr, "elapsed_s": elapsed}
                row["val_loss"] = val
                if rank == 0:
                    bar.write(
                        f"step {done}: val loss {val:.4f} (EMA) | Gaussian reference "
                        f"{reference:.4f} | ratio {val / reference:.3f}"
                    )
            if row is not None:
                history.append(row)
            if run_dir is not None and (
                final or (config.checkpoint_every and done % config.checkpoint_every == 0)
            ):
                monitor.check(done, last_checkpoint)
                last_checkpoint = save(done)
            bar.update(1)
            if callback is not None:
                callback(done)
            if final:
                stopped_reason = "completed" if finished else "time_budget"
                break
    finally:
        bar.close()

    # 5. The result: EMA weights into the prior, provenance into its config.
    session_s = time.perf_counter() - session_start
    if stopped_reason == "already_complete":
        final_val = _validation_loss(ema_weights(eval_prior), val_rows, config, device)
    else:
        final_val = history[-1]["val_loss"]
    ema_weights(prior)
    prior.eval()
    result = TrainResult(
        history=history,
        final_val_loss=final_val,
        gaussian_reference=reference,
        steps=done,
        samples_seen=samples_seen,
        samples_per_s=(done - start_step) * rows_per_step / max(session_s, 1e-9),
        elapsed_s=elapsed_before + session_s,
        stopped_reason=stopped_reason,
        checkpoint=last_checkpoint,
    )
    _record_provenance(prior, config, result, buffer, hook_index, world_size, provenance)
    return result


# ---------------------------------------------------------------------------------- helpers
def _seed(*parts: int) -> int:
    """A 63-bit seed derived from ``parts`` (seed, rank, stream) with NumPy's SeedSequence."""
    value = np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)[0]
    return int(value) >> 1


def _autocast(config: TrainConfig, device: torch.device):
    enabled = config.autocast == "bf16" or (config.autocast == "auto" and device.type == "cuda")
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def _resolve_hook(
    buffer: ActivationRingBuffer, prior: DiffusionPrior, hook: str | int | None
) -> int:
    if hook is not None:
        return buffer.hook_index(hook)
    if buffer.n_hooks == 1:
        return 0
    if prior.config.hook_name in buffer.hook_names:
        return buffer.hook_index(prior.config.hook_name)
    raise ValueError(
        f"The buffer holds hooks {list(buffer.hook_names)}; pass hook= to pick the one to train on "
        f"(the prior is configured for {prior.config.hook_name!r})."
    )


def _global_normalization(buffer: ActivationRingBuffer, hook: int) -> tuple[Tensor, Tensor]:
    if not distributed.is_distributed():
        return buffer.mean(hook), buffer.var(hook)
    # all_reduce rebinds the accumulator's tensors and never writes into them, so a shallow
    # copy leaves the buffer's own (per-rank) statistics untouched.
    moments = copy.copy(buffer.moments)
    moments.all_reduce()
    return moments.mean[hook], moments.var()[hook]


def _make_ema(prior: DiffusionPrior, config: TrainConfig):
    if config.ema_decay == 0:
        return None
    from diffusers.training_utils import EMAModel

    return EMAModel(prior.parameters(), decay=config.ema_decay, foreach=True)


def _validation_rows(
    buffer: ActivationRingBuffer,
    hook: int,
    val_activations: Tensor | None,
    config: TrainConfig,
    rank: int,
) -> Tensor:
    if val_activations is None:
        generator = torch.Generator(device=buffer.device).manual_seed(_seed(config.seed, rank, 3))
        return buffer.sample(config.val_size, generator=generator, hook=hook).clone()
    if not isinstance(val_activations, Tensor) or val_activations.ndim != 2:
        raise ValueError(
            "val_activations must be a [n, d_model] tensor of held-out raw activations, got "
            f"{getattr(val_activations, 'shape', type(val_activations).__name__)}."
        )
    if val_activations.shape[1] != buffer.d_model or val_activations.shape[0] < 2:
        raise ValueError(
            f"val_activations must be [n >= 2, {buffer.d_model}], got "
            f"{tuple(val_activations.shape)}."
        )
    return val_activations[: config.val_size]


@torch.no_grad()
def _validation_loss(
    prior: DiffusionPrior, rows: Tensor, config: TrainConfig, device: torch.device
) -> float:
    # The same seed at every evaluation: changes in val loss come from the weights, not the noise.
    # Noise levels are stratified (evenly spread quantiles, shuffled over the rows), which removes
    # most of the estimate's variance: the loss depends far more on the level than on the row.
    generator = torch.Generator(device=device).manual_seed(_seed(config.seed, 7919))
    n = rows.shape[0]
    order = torch.randperm(n, generator=generator, device=device)
    levels = (order.double() + 0.5) / n
    total = torch.zeros((), dtype=torch.float64, device=device)
    with _autocast(config, device):
        for chunk, chunk_levels in zip(
            rows.split(config.batch_size), levels.split(config.batch_size), strict=True
        ):
            loss = prior.loss(
                chunk.to(device, non_blocking=True),
                generator=generator,
                levels=chunk_levels.float(),
            )
            total += loss.double() * chunk.shape[0]
    count = torch.tensor(float(rows.shape[0]), dtype=torch.float64, device=device)
    packed = distributed.all_reduce_sum(torch.stack([total, count]))
    return float(packed[0] / packed[1])


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


def _warn_on_config_change(saved: dict[str, Any], config: TrainConfig) -> None:
    current = config.to_dict()
    changed = sorted(
        k for k in current if k not in _RESUMABLE_CHANGES and saved.get(k) != current[k]
    )
    if changed:
        warnings.warn(
            f"Resuming with changed training settings {changed} (checkpoint: "
            f"{ {k: saved.get(k) for k in changed} }); the run will not match an uninterrupted "
            "one.",
            stacklevel=3,
        )


def _describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def _record_provenance(
    prior: DiffusionPrior,
    config: TrainConfig,
    result: TrainResult,
    buffer: ActivationRingBuffer,
    hook: int,
    world_size: int,
    provenance: dict[str, Any] | None,
) -> None:
    training = {
        "steps": result.steps,
        "samples_seen": result.samples_seen,
        "world_size": world_size,
        "initial_val_loss": result.initial_val_loss,
        "final_val_loss": result.final_val_loss,
        "gaussian_reference_loss": result.gaussian_reference,
        "val_over_reference": result.val_over_reference,
        "elapsed_s": round(result.elapsed_s, 3),
        "samples_per_s": round(result.samples_per_s, 1),
        "stopped_reason": result.stopped_reason,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "device": _describe_device(prior.device),
        "hook": buffer.hook_names[hook],
        "buffer_capacity": buffer.capacity,
        "train_config": {k: v for k, v in config.to_dict().items() if k != "checkpoint_dir"},
    }
    if provenance:
        training.update(provenance)
    prior.config.training = training
