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

``save_pretrained(dir)`` writes ``config.json`` and ``model.safetensors`` atomically and
``load_baseline(dir)`` returns the class the config names; nothing is ever unpickled.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from jaxtyping import Float
from torch import Tensor, nn

from tl_diffusion_prior.capture.buffer import ActivationRingBuffer
from tl_diffusion_prior.constants import CONFIG_NAME, FORMAT_VERSION, WEIGHTS_NAME
from tl_diffusion_prior.core.normalizer import Normalizer
from tl_diffusion_prior.core.serialization import (
    atomic_directory,
    atomic_save_safetensors,
    atomic_write_json,
    load_state_dict_checked,
    read_json,
)
from tl_diffusion_prior.core.validation import build_config, check_positive_int

BASELINE_REGISTRY: dict[str, type[Baseline]] = {}


@dataclass(kw_only=True)
class BaselineConfig:
    """Fields shared by every baseline; subclasses add their own.

    Attributes:
        kind: Registry key (``"gaussian"``, ``"topk_sae"``); fixed by each subclass.
        d_model: Width of the activations.
        hook_name: Hook the training activations came from (provenance; may be empty).
        model_name: Source model (provenance; may be empty).
        norm_eps: Epsilon of the normaliser, ``std = sqrt(var + norm_eps)``.
        training: JSON-serialisable provenance written by the fitting code (rows, steps, losses).
        format_version: On-disk format version; newer files are rejected.
    """

    expected_kind: ClassVar[str | None] = None

    kind: str
    d_model: int
    hook_name: str = ""
    model_name: str = ""
    norm_eps: float = 1e-5
    training: dict = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        expected = type(self).expected_kind
        if expected is not None and self.kind != expected:
            raise ValueError(
                f"{type(self).__name__} needs kind={expected!r}, got {self.kind!r}; use the "
                f"config class registered for {self.kind!r}."
            )
        check_positive_int("d_model", self.d_model)
        for name in ("hook_name", "model_name"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"{name} must be a str, got {getattr(self, name)!r}.")
        if (
            isinstance(self.norm_eps, bool)
            or not isinstance(self.norm_eps, int | float)
            or not math.isfinite(self.norm_eps)
            or self.norm_eps <= 0
        ):
            raise ValueError(f"norm_eps must be a positive finite float, got {self.norm_eps!r}.")
        if not isinstance(self.training, dict):
            raise ValueError(f"training must be a dict, got {type(self.training).__name__}.")
        try:
            json.dumps(self.training)
        except TypeError as exc:
            raise ValueError(f"training must be JSON-serialisable: {exc}") from exc
        check_positive_int("format_version", self.format_version)
        if self.format_version > FORMAT_VERSION:
            raise ValueError(
                f"format_version {self.format_version} is newer than this library supports "
                f"({FORMAT_VERSION}); upgrade tl_diffusion_prior to load this baseline."
            )

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BaselineConfig:
        """Build the config class that ``data["kind"]`` names; unknown keys are an error."""
        if not isinstance(data, dict):
            raise TypeError(f"data must be a dict, got {type(data).__name__}.")
        kind = data.get("kind")
        if kind not in BASELINE_REGISTRY:
            raise ValueError(
                f"Unknown baseline kind {kind!r}; registered: {sorted(BASELINE_REGISTRY)}. "
                "Import tl_diffusion_prior.evaluate.baselines to register the built-in ones."
            )
        target = BASELINE_REGISTRY[kind].config_class
        return build_config(target, data)


def register_baseline(kind: str):
    """Class decorator registering a :class:`Baseline` subclass under ``kind``."""

    def decorator(cls: type[Baseline]) -> type[Baseline]:
        if kind in BASELINE_REGISTRY and BASELINE_REGISTRY[kind] is not cls:
            raise ValueError(f"Baseline kind {kind!r} is already registered.")
        if cls.config_class.expected_kind != kind:
            raise ValueError(
                f"{cls.__qualname__}.config_class.expected_kind is "
                f"{cls.config_class.expected_kind!r}, but it is registered as {kind!r}."
            )
        BASELINE_REGISTRY[kind] = cls
        return cls

    return decorator


class Baseline(nn.Module):
    """A fitted baseline over one hook's activations, with its own normaliser.

    Subclasses register their tensors as parameters or buffers so that ``state_dict`` holds
    everything; ``save_pretrained``/``from_pretrained`` then need nothing design-specific.
    """

    config_class: ClassVar[type[BaselineConfig]] = BaselineConfig

    def __init__(self, config: BaselineConfig) -> None:
        super().__init__()
        if not isinstance(config, self.config_class):
            raise TypeError(
                f"{type(self).__name__} needs a {self.config_class.__name__}, got "
                f"{type(config).__name__}."
            )
        self.config = config
        self.normalizer = Normalizer(config.d_model, eps=config.norm_eps)

    @property
    def device(self) -> torch.device:
        return self.normalizer.mean.device

    def check_activations(self, x: Any, name: str = "x") -> None:
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise TypeError(f"{name} must be a float tensor, got {type(x).__name__}.")
        if x.ndim == 0 or x.shape[-1] != self.config.d_model:
            raise ValueError(
                f"{name} must end in d_model={self.config.d_model}, got shape {tuple(x.shape)}; "
                f"this {type(self).__name__} was fitted on {self.config.hook_name or 'another'} "
                "hook's activations."
            )

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write ``config.json`` and ``model.safetensors`` (tensors incl. normaliser) atomically."""
        tensors = {k: v.detach() for k, v in self.state_dict().items()}
        meta = {"kind": self.config.kind, "format_version": str(FORMAT_VERSION)}
        with atomic_directory(directory) as tmp:
            atomic_write_json(tmp / CONFIG_NAME, self.config.to_dict())
            atomic_save_safetensors(tmp / WEIGHTS_NAME, tensors, metadata=meta)

    @classmethod
    def from_pretrained(
        cls, directory: str | os.PathLike, device: str | torch.device | None = None
    ) -> Baseline:
        """Load a baseline written by :meth:`save_pretrained` (on ``Baseline``: any kind)."""
        directory = Path(directory)
        config_path = directory / CONFIG_NAME
        if not config_path.is_file():
            raise FileNotFoundError(
                f"No {CONFIG_NAME} in {directory!s}; pass a directory written by save_pretrained."
            )
        config = BaselineConfig.from_dict(read_json(config_path))
        target = BASELINE_REGISTRY[config.kind]
        if cls is not Baseline and not issubclass(target, cls):
            raise ValueError(
                f"{directory!s} holds a {config.kind!r} baseline, not a {cls.__name__}; load it "
                "with tl_diffusion_prior.evaluate.baselines.base.load_baseline."
            )
        baseline = target(config)
        load_state_dict_checked(
            baseline,
            directory / WEIGHTS_NAME,
            f"the {config.kind!r} baseline {CONFIG_NAME} describes",
        )
        baseline.eval()
        return baseline.to(device) if device is not None else baseline


def load_baseline(
    directory: str | os.PathLike, device: str | torch.device | None = None
) -> Baseline:
    """Load a saved baseline of whatever kind its ``config.json`` names.

    The built-in kinds are registered by importing :mod:`tl_diffusion_prior.evaluate.baselines`,
    which importing this module always does first.
    """
    return Baseline.from_pretrained(directory, device=device)


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
