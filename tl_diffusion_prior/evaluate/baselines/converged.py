"""The converged SAE baselines of an evaluation: SAELens's when it is installed, else ours.

:func:`fit_converged_saes` trains one SAE per
:class:`~tl_diffusion_prior.evaluate.baselines.sae_lens_training.SAELensTrainConfig`, each until
its held-out NMSE plateaus (:mod:`~tl_diffusion_prior.evaluate.baselines.convergence`). With
sae-lens installed, SAELens's own trainer trains SAELens SAEs; without it, each TopK config is
our :class:`~tl_diffusion_prior.evaluate.baselines.sae.TopKSAE` (same ``d_sae``, ``k``, batch,
learning rate and seed) trained to the same criterion, and a standard (ReLU) config is skipped,
saying why, since we have no ReLU SAE of our own.
"""

from __future__ import annotations

from torch import Tensor

from tl_diffusion_prior.core.normalizer import Normalizer
from tl_diffusion_prior.evaluate.baselines.base import Baseline
from tl_diffusion_prior.evaluate.baselines.sae_lens_baseline import import_sae_lens
from tl_diffusion_prior.evaluate.baselines.sae_lens_training import (
    SAELensTrainConfig,
    train_sae_lens_sae,
)
from tl_diffusion_prior.evaluate.baselines.sae_training import SAETrainConfig, train_topk_sae


def sae_lens_available() -> tuple[bool, str]:
    """``(True, "")``, or ``(False, why)`` when sae-lens 6 cannot be imported."""
    try:
        import_sae_lens()
    except ImportError as exc:
        return False, str(exc)
    return True, ""


def native_fallback(
    rows: Tensor,
    normalizer: Normalizer,
    config: SAELensTrainConfig,
    *,
    why: str,
    hook_name: str = "",
    model_name: str = "",
    progress: bool = False,
) -> Baseline:
    """Our TopK SAE in place of an SAELens TopK SAE, to the same convergence criterion."""
    native = SAETrainConfig(
        batch_size=config.batch_size,
        lr=config.lr,
        seed=config.seed,
        dead_after_rows=config.dead_after_samples,
    )
    sae = train_topk_sae(
        rows,
        normalizer,
        config.expansion * rows.shape[1],
        config.k,
        native,
        hook_name=hook_name,
        model_name=model_name,
        progress=progress,
        convergence=config.convergence_config(),
    )
    sae.record_training({**sae.training_record, "instead_of_sae_lens": why})
    return sae


def fit_converged_saes(
    rows: Tensor,
    normalizer: Normalizer,
    configs: list[SAELensTrainConfig],
    *,
    hook_name: str = "",
    model_name: str = "",
    progress: bool = False,
) -> list[Baseline]:
    """One converged SAE per config (see module docstring), in ``normalizer``'s space."""
    available, why = sae_lens_available() if configs else (True, "")
    out: list[Baseline] = []
    common = dict(hook_name=hook_name, model_name=model_name, progress=progress)
    for config in configs:
        if available:
            out.append(train_sae_lens_sae(rows, normalizer, config, **common))
        elif config.architecture == "topk":
            out.append(native_fallback(rows, normalizer, config, why=why, **common))
        elif progress:
            print(f"skipping the SAELens {config.label()} SAE (we have no ReLU SAE): {why}")
    return out
