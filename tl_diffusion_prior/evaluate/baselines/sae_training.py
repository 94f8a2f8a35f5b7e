"""Training our TopK SAE baseline on a buffer, for a fixed number of steps or to convergence.

The native loop (no extra dependency) is the standard recipe: Adam, normalised MSE, unit-norm
decoder rows (the gradient component along each row is removed before the step and rows are
renormalised after it), and the AuxK loss of Gao et al. (2024) that lets dead latents model the
residual. :class:`NativeTrainee` runs it one step at a time, for the fixed-step path
(``SAETrainConfig.steps``, the ``--quick`` preset's SAE) and for training until the held-out NMSE
plateaus (``convergence=``, the criterion of
:mod:`~tl_diffusion_prior.evaluate.baselines.convergence`): that is the fallback for the converged
SAELens SAEs (:mod:`~tl_diffusion_prior.evaluate.baselines.sae_lens_training`) when sae-lens is not
installed.

``backend="sae_lens"`` (older) trains SAELens's ``TopKTrainingSAE`` for the fixed steps and
converts it into a :class:`~tl_diffusion_prior.evaluate.baselines.sae.TopKSAE`, checking that both
give the same reconstructions; the converged SAELens baselines keep SAELens's own SAE instead.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from tl_diffusion_prior.capture.buffer import ActivationRingBuffer
from tl_diffusion_prior.core.config import ConfigBase
from tl_diffusion_prior.core.normalizer import Normalizer
from tl_diffusion_prior.core.validation import check_positive_int
from tl_diffusion_prior.evaluate.baselines.base import activation_rows
from tl_diffusion_prior.evaluate.baselines.convergence import (
    ConvergenceConfig,
    split_heldout,
    train_until_converged,
)
from tl_diffusion_prior.evaluate.baselines.sae import TopKSAE, TopKSAEConfig

BACKENDS = ("native", "sae_lens")


@dataclass
class SAETrainConfig(ConfigBase):
    """How to train a :class:`TopKSAE`.

    Attributes:
        steps: Optimiser steps.
        batch_size: Rows per step, drawn uniformly with replacement from the training rows.
        lr: Adam learning rate.
        warmup_fraction: Fraction of steps with a linear warm-up from 0.
        decay_fraction: Final fraction of steps with a linear decay to 0.
        aux_k: Dead latents used by the AuxK loss; None means ``2 * k`` (capped at ``d_sae``).
        aux_coefficient: Weight of the AuxK loss (Gao et al.: 1/32); 0 disables it.
        dead_after_rows: A latent that has not fired for this many training rows counts as dead.
        grad_clip: Max global gradient norm.
        seed: Seed of the initialisation and of the batch sampling.
        log_every: Steps between recorded losses (the history goes into ``training_record``).
        backend: ``"native"`` or ``"sae_lens"`` (needs ``pip install 'tl-diffusion-prior[bench]'``).
    """

    steps: int = 2000
    batch_size: int = 1024
    lr: float = 5e-4
    warmup_fraction: float = 0.02
    decay_fraction: float = 0.2
    aux_k: int | None = None
    aux_coefficient: float = 1.0 / 32
    dead_after_rows: int = 500_000
    grad_clip: float = 1.0
    seed: int = 0
    log_every: int = 50
    backend: str = "native"

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "dead_after_rows", "log_every"):
            check_positive_int(name, getattr(self, name))
        if self.aux_k is not None:
            check_positive_int("aux_k", self.aux_k)
        if not (isinstance(self.lr, int | float) and self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive float, got {self.lr!r}.")
        for name in ("warmup_fraction", "decay_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value!r}.")
        if self.warmup_fraction + self.decay_fraction > 1.0:
            raise ValueError(
                f"warmup_fraction + decay_fraction must be <= 1, got {self.warmup_fraction} + "
                f"{self.decay_fraction}."
            )
        if self.aux_coefficient < 0 or self.grad_clip <= 0:
            raise ValueError(
                f"aux_coefficient must be >= 0 and grad_clip > 0, got {self.aux_coefficient}, "
                f"{self.grad_clip}."
            )
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}.")


def lr_factor(step: int, config: SAETrainConfig) -> float:
    """Learning-rate multiplier at ``step`` (0-based): warm-up, constant, linear decay to 0."""
    warmup = int(config.warmup_fraction * config.steps)
    decay = int(config.decay_fraction * config.steps)
    if warmup and step < warmup:
        return (step + 1) / warmup
    if decay and step >= config.steps - decay:
        return max(config.steps - step, 0) / decay
    return 1.0


class BatchSampler:
    """Normalised batches drawn uniformly (with replacement) from the training rows."""

    def __init__(self, rows: Tensor, normalizer: Normalizer, batch_size: int, seed: int):
        self.rows = rows
        self.normalizer = normalizer
        self.batch_size = batch_size
        self.generator = torch.Generator(device=rows.device).manual_seed(seed)

    def __iter__(self) -> Iterator[Tensor]:
        return self

    def __next__(self) -> Tensor:
        index = torch.randint(
            self.rows.shape[0],
            (self.batch_size,),
            generator=self.generator,
            device=self.rows.device,
        )
        return self.normalizer.normalize(self.rows.index_select(0, index)).float()


@torch.no_grad()
def fraction_of_variance_unexplained(sae: TopKSAE, rows: Tensor, chunk_size: int = 8192) -> float:
    """``sum ||z - z_hat||^2 / sum ||z - mean(z)||^2`` over ``rows`` (normalised space)."""
    normalizer = sae.normalizer
    z = normalizer.normalize(rows.float()).double()
    total = (z - z.mean(0)).square().sum()
    err = z.new_zeros(())
    for start in range(0, z.shape[0], chunk_size):
        chunk = z[start : start + chunk_size]
        err += (chunk - sae(chunk.float()).double()).square().sum()
    return float(err / total)


def train_topk_sae(
    source: ActivationRingBuffer | Tensor,
    normalizer: Normalizer,
    d_sae: int,
    k: int,
    config: SAETrainConfig | None = None,
    *,
    hook: str | int | None = None,
    hook_name: str = "",
    model_name: str = "",
    progress: bool = False,
    convergence: ConvergenceConfig | None = None,
) -> TopKSAE:
    """Train a TopK SAE with ``d_sae`` latents and ``k`` active ones on ``source``'s rows.

    ``normalizer`` (from :func:`~tl_diffusion_prior.evaluate.baselines.base.fit_normalizer`) fixes
    the normalised space. The loss history, training FVU, dead fraction and timing are recorded in
    the returned SAE's ``training_record``. With ``convergence``, ``config.steps`` no longer
    counts: the native loop trains (constant learning rate after the warm-up) until the held-out
    NMSE plateaus, by the criterion SAELens SAEs are trained to, and
    ``training_record["convergence"]`` holds the figures.
    """
    config = config or SAETrainConfig()
    rows = activation_rows(source, hook=hook)
    sae_config = TopKSAEConfig(
        d_model=rows.shape[1],
        d_sae=d_sae,
        k=k,
        hook_name=hook_name,
        model_name=model_name,
        norm_eps=normalizer.eps,
    )
    sae = TopKSAE(sae_config).to(rows.device)
    sae.normalizer.load_state_dict(normalizer.state_dict())
    start = time.perf_counter()
    if convergence is not None:
        if config.backend != "native":
            raise ValueError(
                "Training to convergence here uses the native backend; for SAELens "
                "use sae_lens_training.train_sae_lens_sae."
            )
        rows, heldout = split_heldout(rows, convergence.heldout_rows)
        trainee = NativeTrainee(sae, rows, config, decay=False)
        log = print if progress else None
        heldout = normalizer.normalize(heldout)
        record, curve = train_until_converged(trainee, heldout, convergence, log)
        history = {"convergence": record, "history": curve}
    elif config.backend == "native":
        history = _train_native(sae, rows, config, progress)
    else:
        history = _train_sae_lens(sae, rows, config)
    sae.eval()
    sample = activation_rows(rows, max_rows=min(rows.shape[0], 20_000))
    sae.record_training(
        {
            "backend": config.backend,
            "n_rows": int(rows.shape[0]),
            "train_config": config.to_dict(),
            "seconds": round(time.perf_counter() - start, 2),
            "train_fvu": fraction_of_variance_unexplained(sae, sample),
            **history,
        }
    )
    return sae


class NativeTrainee:
    """Our TopK training loop one step at a time: the fixed-step path (:func:`_train_native`) and
    the convergence path (the ``Trainee`` of :mod:`~tl_diffusion_prior.evaluate.baselines.
    convergence`) share it. ``decay`` False keeps the learning rate constant after the warm-up
    (a convergence run does not know when it ends)."""

    def __init__(self, sae: TopKSAE, rows: Tensor, config: SAETrainConfig, decay: bool = True):
        self.sae, self.config = sae, config
        if not decay:
            self.config = SAETrainConfig(**{**config.to_dict(), "decay_fraction": 0.0})
        generator = torch.Generator(device=rows.device).manual_seed(config.seed)
        self.batches = BatchSampler(rows, sae.normalizer, config.batch_size, config.seed + 1)
        probe = torch.cat([next(self.batches) for _ in range(4)])
        sae.initialize(probe.mean(0), generator=generator)
        # Normalising the MSE by the data variance makes the loss a fraction of variance
        # unexplained.
        self.data_var = float((probe - probe.mean(0)).square().sum(-1).mean())
        self.d_sae = sae.config.d_sae
        self.aux_k = min(config.aux_k or 2 * sae.config.k, self.d_sae)
        self.optimizer = torch.optim.Adam(sae.parameters(), lr=config.lr, betas=(0.9, 0.999))
        self.rows_since_fired = torch.zeros(self.d_sae, dtype=torch.long, device=rows.device)
        self.steps = self.samples_seen = 0

    def step(self) -> tuple[float, float, int]:
        """One optimiser step; returns (loss, aux loss, dead latents)."""
        sae, config = self.sae, self.config
        sae.train()
        for group in self.optimizer.param_groups:
            group["lr"] = config.lr * lr_factor(min(self.steps, config.steps - 1), config)
        z = next(self.batches)
        code = sae.encode(z)
        err = z - sae.decode(code.values, code.indices)
        loss = err.square().sum(-1).mean() / self.data_var
        fired = torch.zeros(self.d_sae, dtype=torch.bool, device=z.device)
        fired[code.indices[code.values > 0]] = True
        self.rows_since_fired = torch.where(fired, 0, self.rows_since_fired + z.shape[0])
        dead = self.rows_since_fired > config.dead_after_rows
        aux = torch.zeros((), device=z.device)
        n_dead = int(dead.sum())
        if config.aux_coefficient > 0 and n_dead > 0:
            pre_dead = code.pre_activations.masked_fill(~dead, float("-inf"))
            values, indices = pre_dead.topk(min(self.aux_k, n_dead), dim=-1)
            err_hat = F.embedding_bag(
                indices, sae.W_dec, per_sample_weights=F.relu(values), mode="sum"
            )
            target = err.detach()
            aux = (target - err_hat).square().sum(-1).mean() / target.square().sum(-1).mean()
            loss = loss + config.aux_coefficient * aux
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        with torch.no_grad():
            # Only directions orthogonal to each unit-norm decoder row change it beyond a rescale.
            grad = sae.W_dec.grad
            grad -= (grad * sae.W_dec).sum(1, keepdim=True) * sae.W_dec
        torch.nn.utils.clip_grad_norm_(sae.parameters(), config.grad_clip)
        self.optimizer.step()
        sae.normalize_decoder_()
        self.steps += 1
        self.samples_seen += z.shape[0]
        return float(loss.detach()), float(aux.detach()), n_dead

    def train(self, n_samples: int) -> None:
        target = self.samples_seen + n_samples
        while self.samples_seen < target:
            self.step()

    @torch.no_grad()
    def reconstruct(self, z: Tensor) -> Tensor:
        return self.sae(z)

    @torch.no_grad()
    def active(self, z: Tensor) -> Tensor:
        code = self.sae.encode(z)
        out = torch.zeros(code.pre_activations.shape, dtype=torch.bool, device=z.device)
        return out.scatter_(1, code.indices, code.values > 0)

    def samples_since_fired(self) -> Tensor:
        return self.rows_since_fired


def _train_native(
    sae: TopKSAE, rows: Tensor, config: SAETrainConfig, progress: bool
) -> dict[str, Any]:
    trainee = NativeTrainee(sae, rows, config)
    steps, losses, aux_losses = [], [], []
    d_sae, k = sae.config.d_sae, sae.config.k
    for step in range(config.steps):
        loss, aux, n_dead = trainee.step()
        if step % config.log_every == 0 or step == config.steps - 1:
            steps.append(step)
            losses.append(loss)
            aux_losses.append(aux)
            if progress:
                print(f"sae d_sae={d_sae} k={k} step {step}: loss {loss:.4f}, dead {n_dead}")
    dead = trainee.rows_since_fired > config.dead_after_rows
    return {
        "history": {"step": steps, "loss": losses, "aux_loss": aux_losses},
        "dead_fraction": float(dead.float().mean()),
    }


def _train_sae_lens(sae: TopKSAE, rows: Tensor, config: SAETrainConfig) -> dict[str, Any]:
    try:
        from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig
        from sae_lens.config import LoggingConfig, SAETrainerConfig
        from sae_lens.training.sae_trainer import SAETrainer
    except ImportError as exc:
        raise ImportError(
            "backend='sae_lens' needs SAELens 6: pip install 'tl-diffusion-prior[bench]', or use "
            "backend='native'."
        ) from exc
    device = str(rows.device)
    cfg = sae.config
    lens_sae = TopKTrainingSAE(
        TopKTrainingSAEConfig(
            d_in=cfg.d_model,
            d_sae=cfg.d_sae,
            k=cfg.k,
            device=device,
            aux_loss_coefficient=config.aux_coefficient,
        )
    )
    torch.manual_seed(config.seed)
    lens_sae.initialize_weights()
    trainer_config = SAETrainerConfig(
        total_training_samples=config.steps * config.batch_size,
        train_batch_size_samples=config.batch_size,
        lr=config.lr,
        lr_end=config.lr,
        lr_warm_up_steps=int(config.warmup_fraction * config.steps),
        lr_decay_steps=int(config.decay_fraction * config.steps),
        device=device,
        dead_feature_window=max(1, config.dead_after_rows // config.batch_size),
        logger=LoggingConfig(log_to_wandb=False),
        n_batches_for_norm_estimate=1,
    )
    batches = BatchSampler(rows, sae.normalizer, config.batch_size, config.seed + 1)
    trained = SAETrainer(trainer_config, lens_sae, batches).fit()
    with torch.no_grad():
        # SAELens scales the pre-activations by the decoder row norms when rescaling is on;
        # folding the norms into the encoder gives the same map with unit-norm decoder rows.
        norms = trained.W_dec.norm(dim=1)
        if not trained.cfg.rescale_acts_by_decoder_norm:
            norms = torch.ones_like(norms)
        sae.W_enc.copy_(trained.W_enc * norms)
        sae.b_enc.copy_(trained.b_enc * norms)
        sae.W_dec.copy_(trained.W_dec / norms[:, None])
        sae.b_dec.copy_(trained.b_dec)
        check = next(batches)[:256]
        expected = trained.decode(trained.encode(check))
        got = sae(check)
        if not torch.allclose(got, expected, atol=1e-4, rtol=1e-4):
            raise ValueError(
                "Converting the SAELens SAE changed its reconstructions (max difference "
                f"{(got - expected).abs().max().item():.3g}); this SAELens version parameterises "
                "TopK SAEs differently. Use backend='native'."
            )
    return {"history": {}, "dead_fraction": None}
