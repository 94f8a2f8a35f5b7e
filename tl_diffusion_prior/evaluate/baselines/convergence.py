"""Training an SAE until its held-out loss stops improving, whichever trainer runs the steps.

A fixed number of steps says nothing about whether an SAE baseline is as good as it gets, and an
under-trained baseline flatters the priors. Here training runs in rounds of ``eval_every_samples``
training samples; after each round the held-out normalised MSE (rows never trained on) is measured,
and training stops once the best value of the last ``patience`` evaluations improved on the best
before them by less than ``min_rel_improvement`` (relative), or when ``max_samples`` is reached
(then ``converged`` is False). The trainer is anything with the small :class:`Trainee` interface:
SAELens's own ``SAETrainer`` (:mod:`~tl_diffusion_prior.evaluate.baselines.sae_lens_training`) or
ours (:mod:`~tl_diffusion_prior.evaluate.baselines.sae_training`), so both meet one criterion.

Figures, all on the held-out rows in the normalised space the SAE is trained in:

* ``heldout_nmse = sum ||z - z_hat||^2 / sum ||z - mean(z)||^2`` (a fraction of variance
  unexplained), and ``explained_variance = 1 - heldout_nmse`` (SAELens's definition);
* ``heldout_l0``: mean number of active latents per row;
* ``dead_latents``: latents that fired neither on the held-out rows nor on the last
  ``dead_window_samples`` training samples.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from tl_diffusion_prior.core.config import ConfigBase
from tl_diffusion_prior.core.validation import check_float, check_int


@dataclass
class ConvergenceConfig(ConfigBase):
    """When SAE training stops (see module docstring).

    Attributes:
        eval_every_samples: Training samples between two held-out evaluations.
        patience: Evaluations in the window the criterion compares with what came before.
        min_rel_improvement: Stop once the window's best held-out NMSE is better than the best
            before it by less than this fraction (0.01: 1%).
        max_samples: Safety cap on training samples; reaching it records ``converged: False``.
        min_samples: Never stop before this many training samples (the first rounds of a fresh
            SAE can stall briefly while latents reorganise).
        heldout_rows: Rows held out of training to measure convergence on (the last rows of the
            training data, which are then never trained on).
        dead_window_samples: A latent that fired on no held-out row and on none of this many
            latest training samples counts as dead.
    """

    eval_every_samples: int = 65_536
    patience: int = 3
    min_rel_improvement: float = 0.01
    max_samples: int = 4_000_000
    min_samples: int = 0
    heldout_rows: int = 8192
    dead_window_samples: int = 262_144

    def __post_init__(self) -> None:
        for name in ("eval_every_samples", "patience", "max_samples", "heldout_rows"):
            check_int(name, getattr(self, name), minimum=1)
        check_int("min_samples", self.min_samples, minimum=0)
        check_int("dead_window_samples", self.dead_window_samples, minimum=1)
        check_float("min_rel_improvement", self.min_rel_improvement, minimum=0.0, maximum=1.0)

    def criterion(self) -> str:
        """The stopping rule in words (recorded beside the figures)."""
        return (
            f"held-out NMSE every {self.eval_every_samples:,} training samples; stop once the best "
            f"of the last {self.patience} evaluations improves on the best before them by less "
            f"than {self.min_rel_improvement:.1%} (relative), at least {self.min_samples:,} and "
            f"at most {self.max_samples:,} samples"
        )


def plateaued(history: list[float], patience: int, min_rel_improvement: float) -> bool:
    """Whether the best of the last ``patience`` values improved on the best before them by less
    than ``min_rel_improvement`` (relative). Needs ``patience + 1`` values; lower is better."""
    if len(history) <= patience:
        return False
    before = min(history[:-patience])
    recent = min(history[-patience:])
    if not math.isfinite(recent):
        return False
    if before <= 0:
        return True
    return (before - recent) / before < min_rel_improvement


@runtime_checkable
class Trainee(Protocol):
    """What the convergence loop needs from a trainer (in the SAE's normalised space)."""

    #: Optimiser steps taken so far.
    steps: int
    #: Training samples seen so far.
    samples_seen: int
    d_sae: int

    def train(self, n_samples: int) -> None:
        """Take steps until at least ``n_samples`` more training samples were seen."""

    def reconstruct(self, z: Tensor) -> Tensor:
        """The SAE's reconstruction of normalised ``z`` (no gradients)."""

    def active(self, z: Tensor) -> Tensor:
        """Bool ``[n, d_sae]``: which latents are active on each row of ``z``."""

    def samples_since_fired(self) -> Tensor:
        """``[d_sae]``: training samples since each latent last fired."""


@torch.no_grad()
def heldout_figures(trainee: Trainee, heldout: Tensor, chunk_size: int = 4096) -> dict[str, Any]:
    """NMSE, mean L0 and which latents fired, on normalised held-out rows."""
    z = heldout.float()
    total = (z.double() - z.double().mean(0)).square().sum()
    err = torch.zeros((), dtype=torch.float64, device=z.device)
    fired = torch.zeros(trainee.d_sae, dtype=torch.bool, device=z.device)
    n_active = 0
    for start in range(0, z.shape[0], chunk_size):
        chunk = z[start : start + chunk_size]
        err += (chunk.double() - trainee.reconstruct(chunk).double()).square().sum()
        active = trainee.active(chunk).to(fired.device)
        fired |= active.any(0)
        n_active += int(active.sum())
    nmse = float(err / total.clamp_min(1e-30))
    return {"nmse": nmse, "l0": n_active / z.shape[0], "fired": fired}


def train_until_converged(
    trainee: Trainee, heldout: Tensor, config: ConvergenceConfig, log=None
) -> tuple[dict[str, Any], dict[str, list]]:
    """Train ``trainee`` in rounds until the held-out NMSE plateaus.

    Returns the ``convergence`` record (see module docstring; flat, for the report's table) and
    the history (``step``, ``samples``, ``heldout_nmse`` at each evaluation, for its loss plot).
    ``log`` (e.g. ``print``) gets one line per evaluation.
    """
    start = time.perf_counter()
    history: list[float] = []
    samples: list[int] = []
    steps: list[int] = []
    converged = False
    while trainee.samples_seen < config.max_samples:
        budget = min(config.eval_every_samples, config.max_samples - trainee.samples_seen)
        trainee.train(budget)
        figures = heldout_figures(trainee, heldout)
        history.append(figures["nmse"])
        samples.append(trainee.samples_seen)
        steps.append(trainee.steps)
        if log is not None:
            log(f"  {trainee.samples_seen:>10,} samples: held-out NMSE {figures['nmse']:.4f}")
        if trainee.samples_seen >= config.min_samples and plateaued(
            history, config.patience, config.min_rel_improvement
        ):
            converged = True
            break
    if not history:  # max_samples already reached: measure once anyway
        history.append(heldout_figures(trainee, heldout)["nmse"])
        samples.append(trainee.samples_seen)
        steps.append(trainee.steps)
    figures = heldout_figures(trainee, heldout)
    recent = trainee.samples_since_fired().to(figures["fired"].device)
    dead = ~figures["fired"] & (recent >= min(config.dead_window_samples, trainee.samples_seen))
    n_dead = int(dead.sum())
    record = {
        "samples_seen": int(trainee.samples_seen),
        "steps": int(trainee.steps),
        "heldout_rows": int(heldout.shape[0]),
        "heldout_nmse": figures["nmse"],
        "explained_variance": 1.0 - figures["nmse"],
        "heldout_l0": figures["l0"],
        "dead_latents": n_dead,
        "dead_fraction": n_dead / trainee.d_sae,
        "converged": converged,
        "criterion": config.criterion(),
        "seconds": round(time.perf_counter() - start, 2),
    }
    return record, {"step": steps, "samples": samples, "heldout_nmse": history}


def split_heldout(rows: Tensor, heldout_rows: int) -> tuple[Tensor, Tensor]:
    """``(train, heldout)``: the last ``heldout_rows`` rows are held out (at most half)."""
    n = rows.shape[0]
    if n < 4:
        raise ValueError(f"Need at least 4 rows to hold some out for convergence, got {n}.")
    held = min(heldout_rows, n // 2)
    return rows[: n - held], rows[n - held :]
