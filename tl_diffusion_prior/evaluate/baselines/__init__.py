"""Baselines the priors are measured against: a Gaussian (PCA, posterior mean), our TopK SAEs and
SAELens SAEs (trained here to convergence, or saved by anyone).

Importing this package registers every built-in kind in ``BASELINE_REGISTRY``.
"""

from tl_diffusion_prior.evaluate.baselines.base import (
    BASELINE_REGISTRY,
    Baseline,
    BaselineConfig,
    activation_rows,
    fit_normalizer,
    load_baseline,
    register_baseline,
)
from tl_diffusion_prior.evaluate.baselines.convergence import ConvergenceConfig
from tl_diffusion_prior.evaluate.baselines.gaussian import GaussianBaseline, GaussianBaselineConfig
from tl_diffusion_prior.evaluate.baselines.sae import TopKSAE, TopKSAEConfig
from tl_diffusion_prior.evaluate.baselines.sae_lens_baseline import (
    SAELensBaseline,
    SAELensBaselineConfig,
)
from tl_diffusion_prior.evaluate.baselines.sae_training import SAETrainConfig, train_topk_sae

__all__ = [
    "BASELINE_REGISTRY",
    "Baseline",
    "BaselineConfig",
    "ConvergenceConfig",
    "GaussianBaseline",
    "GaussianBaselineConfig",
    "SAELensBaseline",
    "SAELensBaselineConfig",
    "SAETrainConfig",
    "TopKSAE",
    "TopKSAEConfig",
    "activation_rows",
    "fit_normalizer",
    "load_baseline",
    "register_baseline",
    "train_topk_sae",
]
