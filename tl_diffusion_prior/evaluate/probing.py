"""One-dimensional probing: the best single feature for a binary task, with the paper's protocol.

**Meta-neurons** (Luo et al., 2026) are the inputs of each block's down-projection of the MLP
prior, ``SiLU(gate(LN h) * time_mod) * up(LN h)``, read while the prior denoises the activation
lightly noised to level ``t`` (fixed noise): :func:`meta_neuron_features`. The paper reads them at
``u = 0.9`` of its code, which is ``t = 0.1`` here (0 clean, 1 noise), the default.

**Protocol** (:func:`best_single_unit`), per task and per feature family (meta-neurons, SAE
latents, raw dimensions, PCA components):

1. documents are split into training and test documents (no document on both sides);
2. on the training rows, the ``prefilter`` units with the largest absolute standardised mean
   difference between the classes are kept (the paper keeps the top 512 by mean difference; the
   standardisation makes units of different scales comparable, e.g. raw dimensions with massive
   activations);
3. each kept unit gets a one-unit logistic probe, scored by its cross-validated AUC over folds of
   training documents; the unit with the best mean fold AUC is chosen;
4. its probe is fitted on all training rows and its AUC on the test documents is reported, with a
   bootstrap interval over test documents.

A one-unit logistic probe's AUC is that of ``sign(w) * x``: the probe is monotone in the unit. And
the sign of the fitted slope is the sign of the class mean difference: the log-likelihood with
the intercept profiled out is concave in the slope ``w`` and its derivative at ``w = 0`` is
``sum_i (y_i - mean y) x_i``, which has the sign of ``mean(x | y=1) - mean(x | y=0)``. So the
probe is fitted exactly, without an optimiser, by that sign (``tests`` check it against a fitted
logistic regression).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from tl_diffusion_prior.core.validation import check_float, check_int
from tl_diffusion_prior.evaluate.auroc import column_auroc, grouped_auroc_ci
from tl_diffusion_prior.evaluate.probe_tasks import document_folds
from tl_diffusion_prior.evaluate.stats import ConfidenceInterval
from tl_diffusion_prior.priors.base import DiffusionPrior
from tl_diffusion_prior.priors.score import ScoreConfig, ScoreNoise


@dataclass(frozen=True)
class ProbeConfig:
    """Settings of :func:`best_single_unit`.

    Attributes:
        prefilter: Units kept by standardised mean difference before cross-validation (paper:
            512).
        n_folds: Cross-validation folds over training documents (paper: 5).
        min_class_rows: A task needs at least this many rows of each class on each side of the
            split; fewer raise a ValueError (the AUC would be noise).
        n_resamples: Bootstrap resamples of the test AUC's interval.
        seed: Seed of the folds and the bootstrap.
    """

    prefilter: int = 512
    n_folds: int = 5
    min_class_rows: int = 10
    n_resamples: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        check_int("prefilter", self.prefilter, 1)
        check_int("n_folds", self.n_folds, 2)
        check_int("min_class_rows", self.min_class_rows, 1)
        check_int("n_resamples", self.n_resamples, 1)


@dataclass
class ProbeResult:
    """The best single unit of one feature family for one task.

    Attributes:
        unit: Its column in the family's features.
        sign: +1 if the positive class has the larger mean on the training rows, else -1.
        cv_auc: Its mean AUC over the training documents' folds.
        test_auc: Its AUC on the test documents, with a bootstrap interval over them.
        n_train, n_test: Labelled rows on either side.
        positive_rate: Share of positives among the labelled rows.
    """

    unit: int
    sign: int
    cv_auc: float
    test_auc: ConfidenceInterval
    n_train: int
    n_test: int
    positive_rate: float

    def to_dict(self) -> dict:
        return {**self.__dict__, "test_auc": self.test_auc.to_dict()}


def standardized_mean_difference(
    features: Float[Tensor, "n k"], labels: Bool[Tensor, " n"]
) -> Float[Tensor, " k"]:
    """``(mean(x | 1) - mean(x | 0)) / pooled std`` per column (0 for a constant column)."""
    # Moments in the features' own dtype: a float64 copy of an [n, d_sae] SAE code would double
    # the memory, and a ranking needs no more precision.
    var_pos, mean_pos = torch.var_mean(features[labels], dim=0, correction=0)
    var_neg, mean_neg = torch.var_mean(features[~labels], dim=0, correction=0)
    difference = mean_pos.double() - mean_neg.double()
    pooled = ((var_pos.double() + var_neg.double()) / 2).sqrt()
    return torch.where(pooled > 0, difference / pooled.clamp_min(1e-300), torch.zeros_like(pooled))


def _signed_auc(
    features: Float[Tensor, "n k"],
    labels: Bool[Tensor, " n"],
    fit: Bool[Tensor, " n"],
    score: Bool[Tensor, " n"],
) -> Float[Tensor, " k"]:
    """Each column's one-unit probe fitted on the ``fit`` rows (its sign), AUC on ``score`` rows."""
    x_fit, y_fit = features[fit].double(), labels[fit]
    sign = torch.sign(x_fit[y_fit].mean(0) - x_fit[~y_fit].mean(0))
    auc = column_auroc(features[score], labels[score])
    return torch.where(sign < 0, 1.0 - auc, auc)  # AUC(-x) = 1 - AUC(x), ties included


def _check_classes(labels: Tensor, name: str, minimum: int) -> None:
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if min(n_pos, n_neg) < minimum:
        raise ValueError(
            f"The {name} rows hold {n_pos} positives and {n_neg} negatives; at least "
            f"min_class_rows={minimum} of each are needed. Use more documents or another task."
        )


def best_single_unit(
    features: Float[Tensor, "n k"],
    labels: Int[Tensor, " n"],
    doc_ids: Int[Tensor, " n"],
    is_test_doc: Bool[Tensor, " d"],
    config: ProbeConfig | None = None,
) -> ProbeResult:
    """The unit of ``features`` whose one-unit probe separates ``labels`` best (module docstring).

    Args:
        features: One row per token, one column per unit.
        labels: 1, 0, or -1 for rows outside the task (ignored).
        doc_ids: Each row's document, an index into ``is_test_doc``.
        is_test_doc: Whether each document is held out for the test
            (:func:`~tl_diffusion_prior.evaluate.probe_tasks.document_split`).
        config: A :class:`ProbeConfig`; None uses the defaults.
    """
    config = config or ProbeConfig()
    if not (features.shape[0] == labels.numel() == doc_ids.numel()):
        raise ValueError(
            f"features ({features.shape[0]} rows), labels ({labels.numel()}) and doc_ids "
            f"({doc_ids.numel()}) must have one entry per token."
        )
    keep = labels >= 0
    x, y, docs = features[keep], labels[keep].bool(), doc_ids[keep]
    test = is_test_doc[docs]
    _check_classes(y[~test], "training", config.min_class_rows)
    _check_classes(y[test], "test", config.min_class_rows)
    train_x, train_y = x[~test], y[~test]
    k = min(config.prefilter, x.shape[1])
    candidates = standardized_mean_difference(train_x, train_y).abs().topk(k).indices
    train_x = train_x[:, candidates]
    folds = document_folds(docs[~test], config.n_folds, config.seed)
    fold_aucs = []
    for fold in range(config.n_folds):
        held = folds == fold
        if min(int(train_y[held].sum()), int((~train_y[held]).sum())) == 0:
            continue  # a fold with one class has no AUC; the other folds decide
        fold_aucs.append(_signed_auc(train_x, train_y, ~held, held))
    if not fold_aucs:
        raise ValueError("No cross-validation fold holds both classes; use more documents.")
    cv = torch.stack(fold_aucs).mean(0)
    best = int(cv.argmax())
    unit = int(candidates[best])
    column = x[:, unit].double()
    sign = 1 if float(column[~test][train_y].mean() - column[~test][~train_y].mean()) >= 0 else -1
    interval = grouped_auroc_ci(
        sign * column[test], y[test], docs[test], config.n_resamples, seed=config.seed
    )
    return ProbeResult(
        unit=unit,
        sign=sign,
        cv_auc=float(cv[best]),
        test_auc=interval,
        n_train=int((~test).sum()),
        n_test=int(test.sum()),
        positive_rate=float(y.double().mean()),
    )


@torch.no_grad()
def meta_neuron_features(
    prior: DiffusionPrior,
    x: Float[Tensor, "n d_model"],
    t: float = 0.1,
    seed: int = 0,
    chunk_size: int = 2048,
) -> Float[Tensor, "n units"]:
    """The inputs of every block's down-projection of an MLP prior at noise level ``t``,
    concatenated over blocks (``depth * d_mlp`` units), float32 on the CPU.

    The noise of each vector is keyed by the seed and the vector's bits
    (:class:`~tl_diffusion_prior.priors.score.ScoreNoise`), so a row's features do not depend on
    the batch it came in.
    """
    check_float("t", t, 0.0, 1.0, min_open=True, max_open=True)
    blocks = getattr(prior.network, "blocks", None)
    if blocks is None or not all(hasattr(block, "down") for block in blocks):
        raise ValueError(
            f"Meta-neurons are the inputs of an MLP prior's down-projections; "
            f"{type(prior).__name__} has no blocks with a 'down' layer (use an MLP or GLP prior)."
        )
    noise_maker = ScoreNoise(
        ScoreConfig("one_step", (t,), seed), prior.config.d_model, prior.device
    )
    captured: list[Tensor] = []
    handles = [
        block.down.register_forward_pre_hook(lambda module, args: captured.append(args[0].float()))
        for block in blocks
    ]
    out = []
    try:
        for start in range(0, x.shape[0], chunk_size):
            rows = x[start : start + chunk_size]
            z = prior.normalizer.normalize(rows.to(prior.device, torch.float32))
            noise = noise_maker.for_vectors(rows.to(prior.device))[:, 0]
            z_t = prior.add_noise(z.to(prior.dtype), noise.to(prior.dtype), t)
            captured.clear()
            prior.network.velocity(z_t, torch.full((1,), t, device=prior.device))
            out.append(torch.cat(captured, dim=-1).cpu())
    finally:
        for handle in handles:
            handle.remove()
    return torch.cat(out)


@torch.no_grad()
def sae_latent_features(
    baseline, x: Float[Tensor, "n d_model"], chunk_size: int = 2048
) -> Float[Tensor, "n d_sae"]:
    """Every latent's activation of an SAE baseline (our TopK SAE or an SAELens one), dense,
    float32 on the CPU; zeros where a latent is inactive."""
    out = []
    for start in range(0, x.shape[0], chunk_size):
        rows = x[start : start + chunk_size].to(baseline.device, torch.float32)
        sae = getattr(baseline, "sae", None)
        if sae is not None:  # SAELens: it encodes in its own space (normalised or raw)
            z = (
                baseline.normalizer.normalize(rows)
                if baseline.config.space == "normalized"
                else rows
            )
            out.append(sae.encode(z.to(sae.W_dec.dtype)).float().cpu())
        elif hasattr(baseline, "encode"):
            code = baseline.encode(baseline.normalizer.normalize(rows).to(baseline.W_dec.dtype))
            dense = torch.zeros(rows.shape[0], baseline.config.d_sae, dtype=torch.float32)
            out.append(dense.scatter_(1, code.indices.cpu(), code.values.float().cpu()))
        else:
            raise TypeError(f"{type(baseline).__name__} is not an SAE baseline (no encoder).")
    return torch.cat(out)
