"""Any SAELens SAE as a baseline: trained here from our buffer, saved on disk, or from the hub.

An :class:`SAELensBaseline` wraps a SAELens 6 ``SAE`` (any architecture: TopK, standard ReLU,
JumpReLU, ...) and records in which space it works:

* ``space="normalized"``: an SAE trained here (``sae_lens_training``) sees the priors' normalised
  activations; the wrapper normalises on the way in and denormalises on the way out;
* ``space="raw"``: an external SAE (trained by SAELens on raw activations) is applied as is.

Saved folder: SAELens's own files (``cfg.json`` and ``sae_weights.safetensors``, written by
``SAE.save_model``, so ``sae_lens.SAE.load_from_disk(folder)`` reads it directly) beside ours
(``config.json``, ``model.safetensors`` with the normaliser, ``training.json`` with the
convergence figures, and ``checksums.json`` over all three data files). Nothing is unpickled:
SAELens reads its config as JSON and its weights with safetensors.

SAELens is imported only here and only when needed (:func:`import_sae_lens`); it is installed by
``.ci/setup`` (the ``dev`` extra) or ``pip install 'tl-diffusion-prior[bench]'``.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor

from tl_diffusion_prior.constants import (
    CONFIG_NAME,
    FORMAT_VERSION,
    SAE_LENS_CFG_NAME,
    SAE_LENS_WEIGHTS_NAME,
    TRAINING_RECORD_NAME,
    WEIGHTS_NAME,
)
from tl_diffusion_prior.core.integrity import check_finite, write_checksums
from tl_diffusion_prior.core.normalizer import Normalizer
from tl_diffusion_prior.core.serialization import (
    atomic_directory,
    atomic_save_safetensors,
    atomic_write_json,
)
from tl_diffusion_prior.core.validation import check_choice
from tl_diffusion_prior.evaluate.baselines.base import (
    Baseline,
    BaselineConfig,
    register_baseline,
)

SPACES = ("normalized", "raw")
INSTALL_HINT = (
    "SAELens baselines need sae-lens 6: run .ci/setup (it installs the dev extra) or "
    "pip install 'sae-lens>=6,<7' 'torch==<your torch version>'."
)


def import_sae_lens() -> Any:
    """The ``sae_lens`` module (6.x), or an ImportError saying how to install it."""
    try:
        import sae_lens
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc
    if not str(sae_lens.__version__).startswith("6."):
        raise ImportError(f"Found sae-lens {sae_lens.__version__}. {INSTALL_HINT}")
    return sae_lens


def is_sae_lens_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` holds an SAE saved in SAELens's format (``cfg.json`` + weights)."""
    path = Path(path)
    return (path / SAE_LENS_CFG_NAME).is_file() and (path / SAE_LENS_WEIGHTS_NAME).is_file()


def check_sae_fits(sae: Any, hook_name: str, d_model: int, source: str) -> None:
    """Refuse an SAE that cannot read this run's activations, before any work starts.

    Compared: its ``d_in`` with ``d_model``, and its recorded hook (``cfg.metadata.hook_name``,
    when it recorded one) with ``hook_name``.
    """
    cfg = sae.cfg
    if cfg.d_in != d_model:
        raise ValueError(
            f"The SAE from {source} reads d_in={cfg.d_in} activations, but the run's hook "
            f"{hook_name or '(unnamed)'} has d_model={d_model}; pass an SAE trained on this hook "
            "of this model."
        )
    sae_hook = getattr(cfg.metadata, "hook_name", None)
    if sae_hook and hook_name and sae_hook != hook_name:
        raise ValueError(
            f"The SAE from {source} was trained on {sae_hook!r}, but the run evaluates "
            f"{hook_name!r}; pass an SAE trained on {hook_name!r}."
        )
    if cfg.reshape_activations != "none":
        raise ValueError(
            f"The SAE from {source} reshapes its input ({cfg.reshape_activations!r}); only "
            "residual-stream SAEs over [.., d_model] activations can be baselines."
        )
    if cfg.normalize_activations == "expected_average_only_in":
        raise ValueError(
            f"The SAE from {source} expects inputs scaled by a factor it does not store "
            "(normalize_activations='expected_average_only_in'); fold it in with "
            "sae.fold_activation_norm_scaling_factor(factor) and save it again."
        )


@dataclass(kw_only=True)
class SAELensBaselineConfig(BaselineConfig):
    """Config of :class:`SAELensBaseline`.

    Attributes:
        sae_architecture: SAELens's architecture name (``"topk"``, ``"standard"``, ...).
        d_sae: Number of latents.
        k: Active latents per token for TopK kinds (None for the others).
        space: ``"normalized"`` (the SAE reads the priors' normalised activations) or ``"raw"``.
    """

    expected_kind: ClassVar[str | None] = "sae_lens"
    kind: str = "sae_lens"
    sae_architecture: str = ""
    d_sae: int = 0
    k: int | None = None
    space: str = "normalized"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("space", self.space, SPACES)


@register_baseline("sae_lens")
class SAELensBaseline(Baseline):
    """A SAELens SAE over RAW activations in, RAW reconstructions out (see module docstring)."""

    config_class = SAELensBaselineConfig
    config: SAELensBaselineConfig

    def __init__(self, config: SAELensBaselineConfig) -> None:
        super().__init__(config)
        self.sae: Any = None  # the SAELens SAE, set by attach()

    @classmethod
    def from_sae(
        cls,
        sae: Any,
        *,
        space: str,
        normalizer: Normalizer | None = None,
        hook_name: str = "",
        model_name: str = "",
        source: str = "an SAELens SAE",
    ) -> SAELensBaseline:
        """Wrap ``sae`` (checked against ``hook_name``); ``normalizer`` is needed in
        ``"normalized"`` space (the one the SAE was trained in)."""
        if space == "normalized" and normalizer is None:
            raise ValueError("An SAE working in the normalised space needs its normalizer.")
        d_model = normalizer.d_model if normalizer is not None else sae.cfg.d_in
        check_sae_fits(sae, hook_name, d_model, source)
        config = SAELensBaselineConfig(
            d_model=d_model,
            hook_name=hook_name,
            model_name=model_name,
            norm_eps=normalizer.eps if normalizer is not None else 1e-5,
            sae_architecture=sae.cfg.architecture(),
            d_sae=sae.cfg.d_sae,
            k=getattr(sae.cfg, "k", None),
            space=space,
        )
        baseline = cls(config)
        if normalizer is not None:
            baseline.normalizer.load_state_dict(normalizer.state_dict())
        baseline.attach(sae)
        return baseline

    def attach(self, sae: Any) -> None:
        cfg = sae.cfg
        if cfg.d_in != self.config.d_model or cfg.d_sae != self.config.d_sae:
            raise ValueError(
                f"The SAELens SAE has d_in={cfg.d_in}, d_sae={cfg.d_sae}; config.json says "
                f"d_model={self.config.d_model}, d_sae={self.config.d_sae}. The files come from "
                "different saves."
            )
        if self.config.k is None:  # saves made before k was recorded: SAELens's cfg knows it
            self.config.k = getattr(cfg, "k", None)
        sae.eval()
        for parameter in sae.parameters():
            parameter.requires_grad_(False)
        self.sae = sae.to(self.device)

    def _require_sae(self) -> Any:
        if self.sae is None:
            raise ValueError(
                "This SAELensBaseline has no SAE attached; load it with load_baseline."
            )
        return self.sae

    @property
    def name(self) -> str:
        """A folder name: ``sae_lens_topk_d4608_k32``."""
        k = f"_k{self.config.k}" if self.config.k is not None else ""
        return f"sae_lens_{self.config.sae_architecture}_d{self.config.d_sae}{k}"

    def setting(self) -> dict:
        """The SAE's knobs for the report: architecture, ``d_sae``, ``k`` for TopK kinds."""
        out = {"arch": self.config.sae_architecture, "d_sae": self.config.d_sae}
        return {**out, "k": self.config.k} if self.config.k is not None else out

    # ------------------------------------------------------------------ apply
    @torch.no_grad()
    def reconstruct(self, x: Tensor, chunk_size: int = 8192) -> Tensor:
        """RAW ``x`` -> RAW reconstruction, same shape, dtype and device."""
        self.check_activations(x)
        sae = self._require_sae()
        flat = x.reshape(-1, self.config.d_model)
        out = torch.empty(flat.shape, dtype=torch.float32, device=self.device)
        normalized = self.config.space == "normalized"
        for start in range(0, flat.shape[0], chunk_size):
            rows = flat[start : start + chunk_size].to(self.device, torch.float32)
            z = self.normalizer.normalize(rows) if normalized else rows
            # W_dec, not sae.dtype: a parent .to() moves the weights but not that attribute.
            z_hat = sae.decode(sae.encode(z.to(sae.W_dec.dtype))).float()
            out[start : start + chunk_size] = (
                self.normalizer.denormalize(z_hat) if normalized else z_hat
            )
        return out.reshape(x.shape).to(device=x.device, dtype=x.dtype)

    # ------------------------------------------------------------------ save / load
    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """SAELens's files and ours in one folder, atomically (see module docstring)."""
        sae = self._require_sae()
        tensors = {k: v.detach() for k, v in self.state_dict().items() if not k.startswith("sae.")}
        meta = {"kind": self.config.kind, "format_version": str(FORMAT_VERSION)}
        with atomic_directory(directory) as tmp:
            atomic_write_json(tmp / CONFIG_NAME, self.config.to_dict())
            atomic_save_safetensors(tmp / WEIGHTS_NAME, tensors, metadata=meta)
            if self.training_record:
                atomic_write_json(tmp / TRAINING_RECORD_NAME, self.training_record)
            sae.save_model(tmp)
            write_checksums(tmp, [WEIGHTS_NAME, SAE_LENS_WEIGHTS_NAME, SAE_LENS_CFG_NAME])

    def load_extra(self, directory: Path) -> None:
        """Read SAELens's files beside ours (checksums were compared by ``from_pretrained``)."""
        sae = import_sae_lens().SAE.load_from_disk(str(directory), device="cpu")
        check_finite(sae.state_dict(), directory / SAE_LENS_WEIGHTS_NAME)
        self.attach(sae)


def load_sae_lens_sae(spec: str, device: str | torch.device | None = None) -> tuple[Any, str]:
    """An external SAELens SAE: a folder SAELens saved, or ``RELEASE/SAE_ID`` from the hub.

    Returns ``(sae, description)``. A folder that holds our ``config.json`` too is ours: load it
    with :func:`~tl_diffusion_prior.evaluate.baselines.base.load_baseline` instead.
    """
    sae_lens = import_sae_lens()
    device = str(device or "cpu")
    path = Path(spec)
    if path.is_dir():
        if not is_sae_lens_dir(path):
            raise FileNotFoundError(
                f"{spec} holds no {SAE_LENS_CFG_NAME} + {SAE_LENS_WEIGHTS_NAME}; pass a folder "
                "written by SAELens's save_model (or RELEASE/SAE_ID for a pretrained one)."
            )
        sae = sae_lens.SAE.load_from_disk(str(path), device=device)
        check_finite(sae.state_dict(), path / SAE_LENS_WEIGHTS_NAME)
        return sae, str(path)
    release, _, sae_id = spec.partition(":")
    if not sae_id:
        raise FileNotFoundError(
            f"--sae {spec!r} is neither a folder nor RELEASE:SAE_ID (a SAELens pretrained release "
            "and one of its SAE ids, e.g. gpt2-small-res-jb:blocks.8.hook_resid_pre)."
        )
    try:
        sae = sae_lens.SAE.from_pretrained(release, sae_id, device=device)
    except (OSError, ConnectionError) as exc:
        raise OSError(
            f"Could not download SAE {sae_id!r} of {release!r} ({exc}); without a hub, save it "
            "with sae.save_model(folder) where one is reachable and pass the folder."
        ) from exc
    return sae, f"{release}:{sae_id}"


def inference_copy(training_sae: Any) -> Any:
    """The inference SAE of a SAELens training SAE, through SAELens's own save/load (so what is
    evaluated right after training is bit for bit what a later run loads)."""
    sae_lens = import_sae_lens()
    with tempfile.TemporaryDirectory() as tmp:
        training_sae.save_inference_model(tmp)
        return sae_lens.SAE.load_from_disk(tmp, device=str(training_sae.device))
