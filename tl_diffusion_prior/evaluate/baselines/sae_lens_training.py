"""Training SAELens SAEs with SAELens's own trainer, from our buffer, until they converge.

SAELens 6's ``SAETrainer`` takes any iterator of activation batches as its ``data_provider``
(``sae_lens.training.types.DataProvider = Iterator[Tensor]``); no model and no ``ActivationsStore``
is needed. The smallest honest adapter is therefore :class:`~tl_diffusion_prior.evaluate.baselines.
sae_training.BatchSampler`: normalised batches drawn from our buffer's training rows (the held-out
rows excluded). The steps are SAELens's: ``SAETrainer.step`` (its Adam, learning-rate and
coefficient schedulers, dead-latent tracking that feeds the TopK AuxK loss, gradient clipping),
driven through the public seams its own ``MultiSAETrainer`` uses (``maybe_reset_sparsity``,
``step``, ``n_training_steps``, ``set_final_sae_metadata``) instead of ``fit()``, whose loop runs
to a fixed sample count: here :func:`~tl_diffusion_prior.evaluate.baselines.convergence.
train_until_converged` decides when to stop, on held-out rows.

The trained SAE is converted to SAELens's inference SAE with its own ``save_inference_model`` and
``load_from_disk`` and wrapped in an
:class:`~tl_diffusion_prior.evaluate.baselines.sae_lens_baseline.SAELensBaseline` working in the
priors' normalised space, whose ``training_record["convergence"]`` holds the figures.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from tl_diffusion_prior.capture.buffer import ActivationRingBuffer
from tl_diffusion_prior.core.config import ConfigBase
from tl_diffusion_prior.core.normalizer import Normalizer
from tl_diffusion_prior.core.validation import check_choice, check_float, check_int
from tl_diffusion_prior.evaluate.baselines.base import activation_rows
from tl_diffusion_prior.evaluate.baselines.convergence import (
    ConvergenceConfig,
    split_heldout,
    train_until_converged,
)
from tl_diffusion_prior.evaluate.baselines.sae_lens_baseline import (
    SAELensBaseline,
    import_sae_lens,
    inference_copy,
)
from tl_diffusion_prior.evaluate.baselines.sae_training import BatchSampler

ARCHITECTURES = ("topk", "standard")


@dataclass
class SAELensTrainConfig(ConfigBase):
    """One SAELens SAE to train to convergence.

    Attributes:
        architecture: ``"topk"`` (TopK, with SAELens's AuxK loss) or ``"standard"`` (ReLU + L1).
        expansion: ``d_sae = expansion * d_model``.
        k: Active latents per token (TopK).
        l1_coefficient: Weight of the L1 penalty (standard; SAELens's loss on normalised inputs,
            whose squared norm is about ``d_model``).
        batch_size: Rows per step.
        lr: Adam learning rate (constant after the warm-up: when training stops is not known in
            advance, so no decay is scheduled).
        lr_warm_up_steps: Steps of linear warm-up.
        dead_after_samples: Training samples without firing after which SAELens counts a latent
            dead (its AuxK loss then trains it on the residual).
        seed: Seed of the initialisation and of the batch sampling.
        convergence: :class:`~tl_diffusion_prior.evaluate.baselines.convergence.ConvergenceConfig`
            fields.
    """

    architecture: str = "topk"
    expansion: int = 8
    k: int = 64
    l1_coefficient: float = 5.0
    batch_size: int = 4096
    lr: float = 1e-3
    lr_warm_up_steps: int = 50
    dead_after_samples: int = 1_000_000
    seed: int = 0
    convergence: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_choice("architecture", self.architecture, ARCHITECTURES)
        for name in ("expansion", "k", "batch_size", "dead_after_samples"):
            check_int(name, getattr(self, name), minimum=1)
        check_int("lr_warm_up_steps", self.lr_warm_up_steps, minimum=0)
        check_float("lr", self.lr, minimum=0.0, min_open=True)
        check_float("l1_coefficient", self.l1_coefficient, minimum=0.0)
        self.convergence_config()  # validates early

    def convergence_config(self) -> ConvergenceConfig:
        return ConvergenceConfig.from_dict(self.convergence)

    def label(self) -> str:
        """``topk_k64_x8`` / ``standard_l1_5_x8``: a folder name for the saved SAE."""
        knob = f"k{self.k}" if self.architecture == "topk" else f"l1_{self.l1_coefficient:g}"
        return f"sae_lens_{self.architecture}_{knob}_x{self.expansion}"


def _training_sae(sae_lens: Any, d_in: int, config: SAELensTrainConfig, device: str) -> Any:
    common = dict(d_in=d_in, d_sae=config.expansion * d_in, device=device)
    if config.architecture == "topk":
        if config.k > common["d_sae"]:
            raise ValueError(f"k={config.k} must not exceed d_sae={common['d_sae']}.")
        sae_config = sae_lens.TopKTrainingSAEConfig(k=config.k, **common)
        return sae_lens.TopKTrainingSAE(sae_config)
    sae_config = sae_lens.StandardTrainingSAEConfig(l1_coefficient=config.l1_coefficient, **common)
    return sae_lens.StandardTrainingSAE(sae_config)


class SAELensTrainee:
    """SAELens's ``SAETrainer`` seen through the convergence loop's ``Trainee`` interface."""

    def __init__(self, trainer: Any, batches: BatchSampler) -> None:
        self.trainer, self.batches = trainer, batches
        self.sae = trainer.sae
        self.d_sae = int(self.sae.cfg.d_sae)

    @property
    def steps(self) -> int:
        return int(self.trainer.n_training_steps)

    @property
    def samples_seen(self) -> int:
        return int(self.trainer.n_training_samples)

    def train(self, n_samples: int) -> None:
        # SAETrainer.fit()'s loop body, less the wandb logging (off) and checkpoints (none).
        target = self.trainer.n_training_samples + n_samples
        while self.trainer.n_training_samples < target:
            self.trainer.maybe_reset_sparsity()
            self.trainer.step(next(self.batches))
            self.trainer.n_training_steps += 1

    @torch.no_grad()
    def reconstruct(self, z: Tensor) -> Tensor:
        self.sae.eval()
        out = self.sae.decode(self.sae.encode(z))
        self.sae.train()
        return out

    @torch.no_grad()
    def active(self, z: Tensor) -> Tensor:
        self.sae.eval()
        out = self.sae.encode(z) != 0
        self.sae.train()
        return out

    def samples_since_fired(self) -> Tensor:
        steps = self.trainer.n_forward_passes_since_fired
        return steps * self.trainer.cfg.train_batch_size_samples


def train_sae_lens_sae(
    source: ActivationRingBuffer | Tensor,
    normalizer: Normalizer,
    config: SAELensTrainConfig | None = None,
    *,
    hook: str | int | None = None,
    hook_name: str = "",
    model_name: str = "",
    progress: bool = False,
) -> SAELensBaseline:
    """Train one SAELens SAE on ``source``'s rows (normalised by ``normalizer``) until the held-out
    NMSE plateaus; the figures are in ``training_record["convergence"]``."""
    sae_lens = import_sae_lens()
    from sae_lens.config import LoggingConfig, SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer

    config = config or SAELensTrainConfig()
    convergence = config.convergence_config()
    rows = activation_rows(source, hook=hook)
    if normalizer.d_model != rows.shape[1]:
        raise ValueError(f"normalizer has d_model={normalizer.d_model}, rows have {rows.shape[1]}.")
    train_rows, heldout_rows = split_heldout(rows, convergence.heldout_rows)
    device = str(rows.device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        training_sae = _training_sae(sae_lens, rows.shape[1], config, device)
    training_sae.cfg.metadata.hook_name = hook_name or None
    training_sae.cfg.metadata.model_name = model_name or None
    batch = config.batch_size
    trainer_config = SAETrainerConfig(
        total_training_samples=convergence.max_samples,
        train_batch_size_samples=batch,
        lr=config.lr,
        lr_end=config.lr,
        lr_warm_up_steps=config.lr_warm_up_steps,
        device=device,
        dead_feature_window=max(1, math.ceil(config.dead_after_samples / batch)),
        feature_sampling_window=max(1, math.ceil(convergence.eval_every_samples / batch)),
        logger=LoggingConfig(log_to_wandb=False),
    )
    batches = BatchSampler(train_rows, normalizer, batch, config.seed + 1)
    trainer = SAETrainer(trainer_config, training_sae, batches)
    trainee = SAELensTrainee(trainer, batches)
    start = time.perf_counter()
    log = print if progress else None
    if progress:
        print(f"SAELens {config.label()} (d_sae {trainee.d_sae}): {convergence.criterion()}")
    heldout = normalizer.normalize(heldout_rows)
    record, curve = train_until_converged(trainee, heldout, convergence, log)
    trainer.set_final_sae_metadata()
    baseline = SAELensBaseline.from_sae(
        inference_copy(training_sae),
        space="normalized",
        normalizer=normalizer,
        hook_name=hook_name,
        model_name=model_name,
        source="training",
    )
    baseline.record_training(
        {
            "trainer": f"sae_lens {sae_lens.__version__} SAETrainer",
            "n_rows": int(train_rows.shape[0]),
            "train_config": config.to_dict(),
            "seconds": round(time.perf_counter() - start, 2),
            "convergence": record,
            "history": curve,
        }
    )
    return baseline
