"""What one evaluation run compares: the fitted baselines and the (condition, methods) plan.

``fit_baselines`` fits the Gaussian/PCA baseline and the TopK SAEs on the training activations in
the priors' normalised space. ``build_plan`` lists, per condition (reconstruction, restoration from
noise of each std, restoration from each steering vector at each scale), every method at every
setting the settings ask for, as :class:`~tl_diffusion_prior.evaluate.reconstructors.Reconstructor`
objects, so that the metrics treat priors and baselines alike.

``check_train_source`` and ``check_baselines`` refuse training activations or saved baselines from
another hook or model than the run's (the priors'), so that nothing is reported under a label it
does not have; what an old file did not record is not compared.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor

from tl_diffusion_prior.capture.buffer import ActivationRingBuffer
from tl_diffusion_prior.constants import MODEL_FINGERPRINT_KEY
from tl_diffusion_prior.core.fingerprint import model_fingerprint
from tl_diffusion_prior.core.integrity import check_same_source
from tl_diffusion_prior.evaluate.baselines.base import activation_rows, fit_normalizer
from tl_diffusion_prior.evaluate.baselines.converged import fit_converged_saes
from tl_diffusion_prior.evaluate.baselines.gaussian import GaussianBaseline
from tl_diffusion_prior.evaluate.baselines.sae import TopKSAE
from tl_diffusion_prior.evaluate.baselines.sae_lens_baseline import SAELensBaseline
from tl_diffusion_prior.evaluate.baselines.sae_training import train_topk_sae
from tl_diffusion_prior.evaluate.fidelity import Condition
from tl_diffusion_prior.evaluate.reconstructors import (
    GaussianPosteriorReconstructor,
    IdentityReconstructor,
    PCAReconstructor,
    PriorReconstructor,
    Reconstructor,
    RoundTripReconstructor,
    SAEReconstructor,
    noise_std_to_t,
)
from tl_diffusion_prior.evaluate.settings import EvalSettings
from tl_diffusion_prior.priors.base import DiffusionPrior

# Method names of the restoration protocols (see build_plan).
WIENER_FILTER = "Wiener filter"
ROUND_TRIP_SUFFIX = " round trip"


@dataclass
class Baselines:
    """The fitted baselines of one run (reusable across runs via ``save``/``load_baseline``)."""

    gaussian: GaussianBaseline
    #: Our TopK SAEs and SAELens SAEs (``SAELensBaseline``: trained here or loaded from disk).
    saes: list[TopKSAE | SAELensBaseline]

    def save(self, directory: str | os.PathLike) -> None:
        directory = Path(directory)
        self.gaussian.save_pretrained(directory / "gaussian")
        taken: set[str] = set()
        for sae in self.saes:
            name, n = sae.name, 1
            while name in taken:  # two SAEs of one size (e.g. another --sae of the same shape)
                n += 1
                name = f"{sae.name}_{n}"
            taken.add(name)
            sae.save_pretrained(directory / name)


def fit_baselines(
    train: ActivationRingBuffer | Tensor,
    settings: EvalSettings,
    *,
    norm_eps: float = 1e-5,
    hook_name: str = "",
    model_name: str = "",
    progress: bool = False,
) -> Baselines:
    """Gaussian/PCA fit, one TopK SAE per ``settings.sae_sizes`` and one converged SAE per
    ``settings.sae_lens`` (SAELens's trainer when sae-lens is installed, else ours; see
    ``baselines.converged``), all in the normaliser's space fitted from ``train`` (the buffer's
    running statistics when ``train`` is a buffer).

    A buffer must hold ``hook_name``; its provenance (source model name and weight fingerprint)
    goes to each baseline's training record.
    """
    check_train_source(train, hook_name)
    normalizer = fit_normalizer(train, eps=norm_eps)
    rows = activation_rows(train, max_rows=settings.max_train_rows)
    gaussian = GaussianBaseline.fit(rows, normalizer, hook_name=hook_name, model_name=model_name)
    saes = [
        train_topk_sae(
            rows,
            normalizer,
            factor * rows.shape[1],
            k,
            settings.sae_train_config(),
            hook_name=hook_name,
            model_name=model_name,
            progress=progress,
        )
        for factor, k in settings.sae_sizes
    ]
    saes += fit_converged_saes(
        rows,
        normalizer,
        settings.sae_lens_configs(),
        hook_name=hook_name,
        model_name=model_name,
        progress=progress,
    )
    provenance = train.provenance if isinstance(train, ActivationRingBuffer) else {}
    for baseline in (gaussian, *saes):
        if provenance:
            baseline.record_training({**baseline.training_record, **provenance})
    return Baselines(gaussian, saes)


def check_priors_match(model, priors: list[DiffusionPrior]) -> str:
    """Refuse priors trained on another model's weights than ``model``'s; returns its fingerprint.

    Compared: each prior's recorded source fingerprint with ``model``'s (priors trained before
    fingerprints were recorded pass).
    """
    fingerprint = model_fingerprint(model)
    for prior in priors:
        prior.check_compatible(model_fingerprint=fingerprint)
    return fingerprint


def check_train_source(
    train: ActivationRingBuffer | Tensor,
    hook_name: str,
    model_fingerprint: str | None = None,
) -> None:
    """Refuse a buffer captured at another hook, or from other model weights, than the run's.

    ``hook_name``/``model_fingerprint`` describe the run (the priors and the model); empty ones,
    and what the buffer did not record, are not compared. The model's name is not compared: the
    buffer records the loaded model's own name, the run the one the priors were given, and the
    same model goes by several (letter case, hub aliases); the fingerprint tells models apart.
    Row tensors carry no provenance and pass.
    """
    if not isinstance(train, ActivationRingBuffer):
        return
    if hook_name and hook_name not in train.hook_names:
        raise ValueError(
            f"The training buffer was captured at {list(train.hook_names)}, but the run evaluates "
            f"{hook_name!r}; capture a buffer at {hook_name!r} (or leave --buffer out)."
        )
    check_same_source(
        "Model fingerprint",
        ("the training buffer", train.provenance.get(MODEL_FINGERPRINT_KEY)),
        ("the run's model", model_fingerprint),
        "Capture the training buffer from the run's model (or leave --buffer out).",
    )


def check_baselines(
    baselines: Baselines,
    hook_name: str,
    model_name: str = "",
    model_fingerprint: str | None = None,
) -> None:
    """Refuse saved baselines fitted at another hook, or on another model, than the run's.

    What a baseline did not record (its optional ``hook_name``/``model_name``, a fingerprint in
    its training record) is not compared.
    """
    for baseline in (baselines.gaussian, *baselines.saes):
        label = f"the {baseline.config.kind} baseline"
        fix = "Fit the baselines on this run's hook and model (leave --baselines out)."
        check_same_source("Hook", (label, baseline.config.hook_name), ("the run", hook_name), fix)
        check_same_source(
            "Model", (label, baseline.config.model_name), ("the run", model_name), fix
        )
        check_same_source(
            "Model fingerprint",
            (label, baseline.training_record.get(MODEL_FINGERPRINT_KEY)),
            ("the run's model", model_fingerprint),
            fix,
        )


def resolve_prior_names(priors: list[DiffusionPrior], names: list[str] | None) -> list[str]:
    if names is not None:
        if len(names) != len(priors) or len(set(names)) != len(names):
            raise ValueError(f"prior_names must be {len(priors)} unique names, got {names}.")
        return list(names)
    out, seen = [], {}
    for prior in priors:
        base = f"{prior.config.architecture} prior"
        seen[base] = seen.get(base, 0) + 1
        out.append(base if seen[base] == 1 else f"{base} #{seen[base]}")
    return out


def prior_reconstructors(
    priors: list[DiffusionPrior], names: list[str], t: float, num_steps: int, one_step: bool
) -> list[Reconstructor]:
    """Each prior at level ``t`` with ``num_steps`` steps, plus its one-step estimate if asked."""
    out: list[Reconstructor] = [
        PriorReconstructor(p, t, num_steps, name=n) for p, n in zip(priors, names, strict=True)
    ]
    if one_step:
        out += [
            PriorReconstructor(p, t, 1, name=f"{n} one-step")
            for p, n in zip(priors, names, strict=True)
        ]
    return out


def build_plan(
    settings: EvalSettings,
    baselines: Baselines,
    priors: list[DiffusionPrior],
    names: list[str],
    steer_vectors: dict[str, Tensor] | None,
    mean_norm: float,
) -> list[tuple[Condition, list[Reconstructor]]]:
    """Every (condition, methods) pair of a run (see module docstring).

    Reconstruction sweeps PCA over ``pca_ks``, every SAE, and the Gaussian posterior and each prior
    over ``ts``. Restoration from noise of std ``s`` runs two protocols: *matched t*, where the
    priors and the Gaussian posterior start at ``t = s / (1 + s)``, the level the noisy input
    already sits at, with no extra noise (the Gaussian posterior mean there is the Wiener filter,
    named so); and the paper's *round trip* (``"<prior> round trip"``), which noises the noisy
    input again to ``headline_t`` and denoises. PCA and the SAEs run at every setting.
    Steering restoration adds ``scale * mean_norm * unit(vector)`` and reconstructs at
    ``steer_ts``.
    """
    g = baselines.gaussian
    pcas = [PCAReconstructor(g, k) for k in settings.pca_ks if k <= g.config.d_model]
    saes = [SAEReconstructor(sae) for sae in baselines.saes]
    steps, one_step = settings.prior_num_steps, settings.one_step
    plan: list[tuple[Condition, list[Reconstructor]]] = []
    recon: list[Reconstructor] = [IdentityReconstructor(), *pcas, *saes]
    for t in settings.ts:
        recon += [GaussianPosteriorReconstructor(g, t, m) for m in settings.gaussian_modes]
        recon += prior_reconstructors(priors, names, t, steps, one_step)
    plan.append((Condition("reconstruct"), recon))
    for std in settings.noise_stds:
        t = noise_std_to_t(std)
        methods: list[Reconstructor] = [IdentityReconstructor(), *pcas, *saes]
        methods += [
            GaussianPosteriorReconstructor(g, t, m, name=WIENER_FILTER if m == "mean" else None)
            for m in settings.gaussian_modes
        ]
        methods += prior_reconstructors(priors, names, t, steps, one_step)
        methods += [
            RoundTripReconstructor(
                PriorReconstructor(p, settings.headline_t, steps), f"{n}{ROUND_TRIP_SUFFIX}"
            )
            for p, n in zip(priors, names, strict=True)
        ]
        plan.append((Condition("noise", noise_std=std), methods))
    for vec_name, vector in (steer_vectors or {}).items():
        unit = vector.float().cpu() / vector.float().norm().clamp_min(1e-12)
        for scale in settings.steer_scales:
            methods = [IdentityReconstructor(), *pcas, *saes]
            for t in settings.steer_ts:
                methods += [GaussianPosteriorReconstructor(g, t, "mean")]
                methods += prior_reconstructors(priors, names, t, steps, False)
            condition = Condition(
                "steer", steer_vector=unit * mean_norm, steer_scale=scale, steer_name=vec_name
            )
            plan.append((condition, methods))
    return plan
