"""Fitted baselines that the priors are compared with, saved and loaded like priors.

Every baseline works in the same normalised space as the priors: it owns a
:class:`~tl_diffusion_prior.core.normalizer.Normalizer` fitted from the capture buffer's running
statistics (:func:`fit_normalizer`), takes RAW activations and returns RAW activations. Two kinds
exist:

* ``"gaussian"`` (:class:`~tl_diffusion_prior.evaluate.baselines.gaussian.GaussianBaseline`): one
  full-covariance fit that serves both PCA projection (any ``k``) and the Gaussian posterior
  denoiser (the Wiener filter at any noise level ``t``);
* ``"topk_sae"`` (:class:`~tl_diffusion_prior.evaluate.baselines.sae.TopKSAE`): a TopK sparse
  autoencoder.

``save_pretrained(dir)`` writes ``config.json``, ``model.safetensors`` and its checksum
atomically and ``load_baseline(dir)`` returns the class the config names, refusing corrupt or
non-finite weights; nothing is ever unpickled.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from jaxtyping import Float
from torch import Tensor

from tl_diffusion_prior.capture.buffer import ActivationRingBuffer
from tl_diffusion_prior.core.normalizer import Normalizer
from tl_diffusion_prior.core.pretrained import PretrainedConfig, PretrainedModule, Registry
from tl_diffusion_prior.core.validation import check_positive_int

#: Kind name -> baseline class. Importing :mod:`tl_diffusion_prior.evaluate.baselines` fills it.
BASELINE_REGISTRY: Registry[Baseline] = Registry(
    "baseline kind",
    hint="Import tl_diffusion_prior.evaluate.baselines to register the built-in ones.",
)


@dataclass(kw_only=True)
class BaselineConfig(PretrainedConfig):
    """Fields shared by every baseline; subclasses add their own.

    The shared fields and their checks come from
    :class:`~tl_diffusion_prior.core.pretrained.PretrainedConfig`; for a baseline the hook and
    model names are optional provenance.

    Attributes:
        kind: Registry key (``"gaussian"``, ``"topk_sae"``); fixed by each subclass.
        d_model: Width of the activations.
        hook_name: Hook the training activations came from (provenance; may be empty).
        model_name: Source model (provenance; may be empty).
        norm_eps: Epsilon of the normaliser, ``std = sqrt(var + norm_eps)``.
        format_version: On-disk format version; newer files are rejected.
    """

    registry: ClassVar[Registry] = BASELINE_REGISTRY
    registry_key: ClassVar[str] = "kind"
    require_provenance: ClassVar[bool] = False
    saved_object: ClassVar[str] = "baseline"
    #: The ``kind`` value a subclass requires (None on the base class).
    expected_kind: ClassVar[str | None] = None

    kind: str


def register_baseline(kind: str):
    """Class decorator registering a :class:`Baseline` subclass under ``kind``."""
    return BASELINE_REGISTRY.register(kind)


class Baseline(PretrainedModule):
    """A fitted baseline over one hook's activations, with its own normaliser.

    Subclasses register their tensors as parameters or buffers so that ``state_dict`` holds
    everything; ``save_pretrained``/``from_pretrained`` (from
    :class:`~tl_diffusion_prior.core.pretrained.PretrainedModule`) then need nothing
    design-specific. ``from_pretrained`` on ``Baseline`` loads any kind.
    """

    config_class: ClassVar[type[BaselineConfig]] = BaselineConfig
    config: BaselineConfig

    @property
    def device(self) -> torch.device:
        return self.normalizer.mean.device

    @classmethod
    def from_pretrained(
        cls,
        directory: str | os.PathLike,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        *,
        verify: bool = True,
    ):
        """``PretrainedModule.from_pretrained``, then :meth:`load_extra` for what a kind keeps
        beside ``model.safetensors`` (an SAELens SAE's own files)."""
        module = super().from_pretrained(directory, dtype=dtype, verify=verify)
        module.load_extra(Path(directory))
        return module.to(device=device)

    def load_extra(self, directory: Path) -> None:
        """Read files of the save beyond the state dict (none for most kinds)."""

    def check_activations(self, x: Any, name: str = "x") -> None:
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise TypeError(f"{name} must be a float tensor, got {type(x).__name__}.")
        if x.ndim == 0 or x.shape[-1] != self.config.d_model:
            raise ValueError(
                f"{name} must end in d_model={self.config.d_model}, got shape {tuple(x.shape)}; "
                f"this {type(self).__name__} was fitted on {self.config.hook_name or 'another'} "
                "hook's activations."
            )


def load_baseline(
    directory: str | os.PathLike,
    device: str | torch.device | None = None,
    *,
    verify: bool = True,
) -> Baseline:
    """Load a saved baseline of whatever kind its ``config.json`` names.

    The built-in kinds are registered by importing :mod:`tl_diffusion_prior.evaluate.baselines`,
    which importing this module always does first. ``verify=False`` skips comparing the weights
    with their recorded checksum.
    """
    return Baseline.from_pretrained(directory, device=device, verify=verify)


# --------------------------------------------------------------------------- data helpers


def activation_rows(
    source: ActivationRingBuffer | Tensor,
    hook: str | int | None = None,
    max_rows: int | None = None,
) -> Float[Tensor, "n d_model"]:
    """The training rows of ``source`` (a filled buffer or an ``[n, d_model]`` tensor), float32.

    For a buffer with several hooks, ``hook`` selects one. ``max_rows`` keeps an evenly spaced
    subset, which stays representative because the buffer is in capture order.
    """
    if isinstance(source, ActivationRingBuffer):
        if hook is None and source.n_hooks > 1:
            raise ValueError(f"The buffer holds {list(source.hook_names)}; pass hook= to pick one.")
        rows = source.filled_rows(0 if hook is None else hook)
        if rows.ndim == 3:
            rows = rows[:, 0]
    elif isinstance(source, Tensor):
        if source.ndim != 2 or not source.is_floating_point():
            raise ValueError(
                "source must be an ActivationRingBuffer or a float [n, d_model] tensor, got "
                f"{source.dtype} {tuple(source.shape)}."
            )
        rows = source
    else:
        raise TypeError(
            "source must be an ActivationRingBuffer or a float [n, d_model] tensor, got "
            f"{type(source).__name__}."
        )
    if rows.shape[0] == 0:
        raise ValueError("source holds no activations; fill the buffer first.")
    if max_rows is not None:
        check_positive_int("max_rows", max_rows)
        if rows.shape[0] > max_rows:
            index = torch.linspace(0, rows.shape[0] - 1, max_rows, device=rows.device)
            rows = rows.index_select(0, index.round().long())
    return rows.float()


def fit_normalizer(
    source: ActivationRingBuffer | Tensor,
    eps: float = 1e-5,
    hook: str | int | None = None,
) -> Normalizer:
    """A normaliser with the statistics the priors use.

    From a buffer: its running float64 mean/variance over every accepted row ever pushed (exactly
    what the trainer hands the prior). From a tensor: the float64 mean/population variance of it.
    """
    if isinstance(source, ActivationRingBuffer):
        if hook is None and source.n_hooks > 1:
            raise ValueError(f"The buffer holds {list(source.hook_names)}; pass hook= to pick one.")
        index = 0 if hook is None else hook
        mean, var = source.mean(index), source.var(index)
    else:
        rows = activation_rows(source).double()
        mean, var = rows.mean(0), rows.var(0, correction=0)
    normalizer = Normalizer(int(mean.shape[-1]), eps=eps)
    normalizer.set_stats(mean.cpu(), var.cpu())
    return normalizer
