"""Stage 4: train a diffusion prior on the activations in a ring buffer.

:func:`train_prior` reads as its phases: check the inputs (and, when resuming, that the checkpoint
was taken on the same hook, model and model weights: :func:`check_resume_source`); fix the
normalisation from the buffer's running statistics (on all ranks) and let the design fit its
data-dependent parts; build the :class:`~tl_diffusion_prior.training.run.TrainingRun` (optimizer,
EMA and generators, restored from a checkpoint when resuming) with its validation rows and Gaussian
reference; validate the starting weights; run the loop (:mod:`tl_diffusion_prior.training.run`);
finish with the EMA weights in the prior and the run's provenance (with the source model's weight
fingerprint) in its training record. Every random draw comes from a seeded generator whose
state is checkpointed, so an interrupted and resumed run ends with bit-identical weights. Under
``torchrun`` the prior is wrapped in DistributedDataParallel and each rank samples its own buffer;
rank 0 writes the shared files.

The recipe follows the paper (AdamW, 1 % linear warm-up then cosine to 0.1 x lr, grad clip 1.0,
bf16 autocast on GPU) and adds an EMA of the weights, which is what gets validated and saved.
The command line (``tl-diffusion-prior train``) is in :mod:`tl_diffusion_prior.cli.train`.
"""

from __future__ import annotations

import copy
import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from tl_diffusion_prior.capture.buffer import ActivationRingBuffer
from tl_diffusion_prior.constants import MODEL_FINGERPRINT_KEY
from tl_diffusion_prior.core import distributed
from tl_diffusion_prior.core.integrity import check_same_source
from tl_diffusion_prior.priors.base import DiffusionPrior
from tl_diffusion_prior.training import checkpoint as ckpt
from tl_diffusion_prior.training.config import TrainConfig
from tl_diffusion_prior.training.multi_layer import resolve_multi_layer_hooks
from tl_diffusion_prior.training.result import TrainResult
from tl_diffusion_prior.training.run import TrainingRun
from tl_diffusion_prior.training.runtime import derive_seed
from tl_diffusion_prior.training.validation import validation_rows

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


def train_prior(
    prior: DiffusionPrior,
    buffer: ActivationRingBuffer,
    config: TrainConfig,
    *,
    val_activations: Float[Tensor, "n d_model"] | Float[Tensor, "n layers d_model"] | None = None,
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
            reference (``[n, layers, d_model]`` for a multi-layer prior, in its layer order);
            without them both use a fixed draw of ``config.val_size`` buffer rows (not held out).
        refill: called as ``refill(n_rows)`` every ``config.refill_every`` steps (see
            :func:`make_refill`); its ``state_dict()``/``load_state_dict()``, if it has them, are
            checkpointed.
        resume: True continues from the latest checkpoint in ``config.checkpoint_dir`` when there
            is one; False starts fresh and refuses a directory that already holds checkpoints; a
            path resumes from that checkpoint (or the latest one in that run directory).
        hook: which of the buffer's hooks to train on (default: its only one, or the prior's). A
            multi-layer prior (``GLPPrior`` with no layer picked) trains on all its hooks, which
            the buffer must hold; leave ``hook`` unset.
        provenance: extra JSON-able facts (corpus, tokens, model) for ``prior.training_record``.
            It is checkpointed: a resumed run's record also lists those of its earlier sessions
            (``earlier_sessions``, each with the steps it trained).
        callback: called with the number of completed steps after each step (after that step's
            checkpoint); an exception it raises interrupts training as a crash would.

    Raises:
        NonFiniteLossError: the loss or gradient norm became NaN/inf.
        ValueError: an empty buffer, mismatched widths or inconsistent resume settings, or a
            checkpoint of another hook, model or set of buffer hooks than ``prior``/``buffer``.
    """
    hook_index = _check_inputs(prior, buffer, config, hook, refill, provenance, val_activations)
    state = _resume_state(config, resume, buffer)
    if state is not None:
        check_resume_source(
            state.meta,
            str(state.path),
            hook_name=prior.config.hook_name,
            model_name=prior.config.model_name,
            buffer_hooks=list(buffer.hook_names),
            model_fingerprint=buffer.provenance.get(MODEL_FINGERPRINT_KEY),
        )
    fit_rows = _prepare(prior, buffer, hook_index, config, state)
    run = TrainingRun.build(
        prior,
        buffer,
        config,
        hook=hook_index,
        refill=refill,
        state=state,
        val_activations=val_activations,
        fit_rows=fit_rows,
        provenance=provenance,
    )
    del fit_rows
    if state is None:
        run.validate_start()
    run.loop(callback)
    return run.finish()


def _check_inputs(
    prior: DiffusionPrior,
    buffer: ActivationRingBuffer,
    config: TrainConfig,
    hook: str | int | None,
    refill: Callable[[int], Any] | None,
    provenance: dict[str, Any] | None,
    val_activations: Tensor | None = None,
) -> int | tuple[int, ...]:
    """Refuse inconsistent arguments; returns the index of the buffer hook to train on (a
    multi-layer prior: the indices of its hooks)."""
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
    if val_activations is not None:  # its shape is checked here, before any work
        validation_rows(buffer, hook_index, val_activations, config, rank=0)
    try:
        json.dumps(provenance)
    except TypeError as exc:
        raise ValueError(
            f"provenance must be JSON-serialisable (it is saved in the prior's config): {exc}"
        ) from exc
    if config.refill_every and refill is None:
        raise ValueError("config.refill_every is set but no refill was passed; see make_refill.")
    return hook_index


def _resume_state(
    config: TrainConfig, resume: bool | str | Path, buffer: ActivationRingBuffer
) -> ckpt.Checkpoint | None:
    """The checkpoint to continue from, or None for a fresh run (which needs a filled buffer)."""
    resume_path = ckpt.resolve_resume(config.checkpoint_dir, resume)
    if resume_path is not None:
        return ckpt.load_checkpoint(resume_path)
    if buffer.num_pushed == 0:
        raise ValueError(
            "The buffer is empty: fill it first (tl_diffusion_prior.capture.capture.fill_buffer)."
        )
    return None


def check_resume_source(
    meta: dict[str, Any],
    where: str,
    *,
    hook_name: str,
    model_name: str,
    buffer_hooks: list[str] | None = None,
    model_fingerprint: str | None = None,
) -> None:
    """Refuse to resume a checkpoint (its JSON ``meta``) taken on another hook, model, buffer hooks
    or model weights than this run's.

    Resuming loads the checkpoint's weights, normaliser and buffer rows, so a prior configured for
    another hook or model would be saved under a label its weights do not have. A value either
    side did not record (older checkpoints, a buffer not yet filled) is not compared. The command
    line calls this on the latest checkpoint's JSON before it loads the model or captures.
    """
    saved_prior = meta.get("prior_config", {})
    saved_buffer = meta.get("buffer", {})
    where = f"the checkpoint {where}"
    check_same_source(
        "Hook",
        (where, saved_prior.get("hook_name")),
        ("this run", hook_name),
        f"Resume with the checkpoint's hook (--hook {saved_prior.get('hook_name')}), or train "
        "the new hook in another checkpoint directory.",
    )
    check_same_source(
        "Model",
        (where, saved_prior.get("model_name")),
        ("this run", model_name),
        "Resume with the checkpoint's model, or train this model in another checkpoint directory.",
    )
    saved_hooks = saved_buffer.get("hook_names")
    check_same_source(
        "Buffer hooks",
        (where, None if saved_hooks is None else ", ".join(saved_hooks)),
        ("this run's buffer", None if buffer_hooks is None else ", ".join(buffer_hooks)),
        "Resume with a buffer of the checkpoint's hooks (its rows are restored from it).",
    )
    check_same_source(
        "Model fingerprint",
        (where, saved_buffer.get(MODEL_FINGERPRINT_KEY)),
        ("this run's model", model_fingerprint),
        "The model's weights differ from those of the interrupted run (another checkpoint or "
        "fine-tune under the same name); resume with the same model or start a new run.",
    )


def _prepare(
    prior: DiffusionPrior,
    buffer: ActivationRingBuffer,
    hook: int | tuple[int, ...],
    config: TrainConfig,
    state: ckpt.Checkpoint | None,
) -> Tensor | None:
    """Fix the normalisation and the data-dependent parts of the design; returns the fit rows.

    A fresh run takes the normalisation from the running statistics of every row pushed so far
    (on all ranks), then lets the design fit itself (the UNet's layout and Gaussian skip) on
    :data:`FIT_ROWS` rows, which the Gaussian reference is fitted on too. A resumed run loads the
    checkpoint's raw weights and normaliser instead (and returns None).
    """
    if state is not None:
        ckpt.load_prior_weights(prior, state)
        _warn_on_config_change(state.meta["config"], config)
        return None
    generator = torch.Generator(device=buffer.device).manual_seed(derive_seed(config.seed, 4))
    fit_rows = buffer.sample(FIT_ROWS, generator=generator, hook=hook)
    if not prior.normalizer.is_fitted:
        prior.set_normalization(*_global_normalization(buffer, hook))
        if not isinstance(hook, tuple):  # a multi-layer GLP fits nothing beyond its statistics
            prior.fit_data(fit_rows)
        # Each rank fitted on its own rows; rank 0's fit is the one every rank trains.
        distributed.broadcast_buffers_from_main(prior)
    return fit_rows


# ---------------------------------------------------------------------------------- helpers
def _resolve_hook(
    buffer: ActivationRingBuffer, prior: DiffusionPrior, hook: str | int | None
) -> int | tuple[int, ...]:
    layer_hooks = resolve_multi_layer_hooks(buffer, prior, hook)
    if layer_hooks is not None:
        return layer_hooks  # a multi-layer prior reads all its hooks at once
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


def _global_normalization(
    buffer: ActivationRingBuffer, hook: int | tuple[int, ...]
) -> tuple[Tensor, Tensor]:
    """The hook's (or hooks', ``[layers, d_model]``) mean and variance over all ranks' rows."""
    if not distributed.is_distributed():
        return buffer.mean(hook), buffer.var(hook)
    hook = list(hook) if isinstance(hook, tuple) else hook
    # all_reduce rebinds the accumulator's tensors and never writes into them, so a shallow
    # copy leaves the buffer's own (per-rank) statistics untouched.
    moments = copy.copy(buffer.moments)
    moments.all_reduce()
    return moments.mean[hook], moments.var()[hook]


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
            stacklevel=4,  # the caller of train_prior
        )
