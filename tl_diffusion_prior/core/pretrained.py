"""Save/load shared by priors and baselines: a name registry, a config base and a module base.

Priors and fitted baselines are the same kind of object on disk: an ``nn.Module`` over one hook's
activations, with its own :class:`~tl_diffusion_prior.core.normalizer.Normalizer`, saved as a
directory holding

* ``config.json``: the config's :meth:`~tl_diffusion_prior.core.config.ConfigBase.to_dict`, whose
  ``registry_key`` field (``"architecture"`` for priors, ``"kind"`` for baselines) names the class;
* ``model.safetensors``: the whole state dict (weights, normaliser statistics, fitted buffers);
* ``training.json`` (when there is one): the module's :attr:`~PretrainedModule.training_record`,
  what training or fitting produced (steps, losses, dates, data). The config describes the
  constructor only and is never changed after it; files written before this split kept the record
  as the config's ``training`` key, which loading still reads;
* ``checksums.json``: ``{"model.safetensors": <sha256 of its bytes>}``, written last and compared
  on load (``verify=False`` skips it, for speed), so a flipped byte in the weights is an error that
  names the file. It is a file of its own because the config describes the constructor only and a
  file cannot hold its own checksum. Saves from before it existed have none and load unchecked.
* ``README.md`` (priors, whose config requires provenance): a model card built from the config and
  the training record (:mod:`~tl_diffusion_prior.core.model_card`); informational, never read.

Loading also refuses NaN/inf in any floating-point tensor (weights, normaliser statistics, fitted
buffers), naming the tensor and the file: one NaN weight would make every output NaN.

A family (priors, baselines) is three things built on this module: a :class:`Registry`, a base
config (a :class:`PretrainedConfig` subclass that declares the registry-key field and points at the
registry) and a base module (a :class:`PretrainedModule` subclass whose ``config_class`` is that
config). Each design then subclasses both and registers itself with ``@registry.register(name)``.
Loading never unpickles: the config is JSON, the tensors safetensors, loaded strictly.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

import torch
from torch import nn

from tl_diffusion_prior.constants import (
    CONFIG_NAME,
    FORMAT_VERSION,
    MODEL_CARD_NAME,
    TRAINING_RECORD_NAME,
    WEIGHTS_NAME,
)
from tl_diffusion_prior.core.config import ConfigBase, check_format_version
from tl_diffusion_prior.core.integrity import check_finite, verify_checksums, write_checksums
from tl_diffusion_prior.core.model_card import build_model_card
from tl_diffusion_prior.core.normalizer import Normalizer
from tl_diffusion_prior.core.serialization import (
    atomic_directory,
    atomic_save_safetensors,
    atomic_write_json,
    atomic_write_text,
    load_state_dict_checked,
    read_json,
)
from tl_diffusion_prior.core.validation import check_float, check_positive_int

ModuleT = TypeVar("ModuleT", bound="PretrainedModule")


class UnknownNameError(KeyError, ValueError):
    """A name no class is registered under.

    A ``KeyError``, so a :class:`Registry` behaves as a mapping (``in``, ``.get``), and a
    ``ValueError``, as every other invalid argument or config value in the package.
    """

    def __str__(self) -> str:
        # KeyError's str() is the repr of its argument; the message reads better unquoted.
        return str(self.args[0]) if self.args else ""


class Registry(Mapping[str, type[ModuleT]], Generic[ModuleT]):
    """Name -> registered class, read like a dict; :meth:`register` adds to it.

    Args:
        what: What a name denotes, for messages: ``"prior architecture"``.
        hint: How to fix an unknown name, appended to that error.
    """

    def __init__(self, what: str, hint: str = "") -> None:
        self.what = what
        self.hint = hint
        self._classes: dict[str, type[ModuleT]] = {}

    def __getitem__(self, name: Any) -> type[ModuleT]:
        # ``name`` is typed Any: it is read from files, where anything may stand in its place.
        try:
            return self._classes[name]
        except (KeyError, TypeError):  # TypeError: an unhashable name read from a bad file
            message = f"Unknown {self.what} {name!r}; registered: {sorted(self._classes)}."
            raise UnknownNameError(f"{message} {self.hint}".rstrip()) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._classes)

    def __len__(self) -> int:
        return len(self._classes)

    def __repr__(self) -> str:
        return f"Registry({self.what!r}, {sorted(self._classes)})"

    def register(self, name: str) -> Callable[[type[ModuleT]], type[ModuleT]]:
        """Class decorator: register a :class:`PretrainedModule` subclass under ``name``.

        Its ``config_class`` must declare the same name (``expected_architecture = name`` for a
        prior), and the class gets it as an attribute named after the registry key
        (``cls.architecture == name``). Registering a second class under a taken name is an
        error; registering the same class again is not (a module may be reloaded).
        """

        def decorator(cls: type[ModuleT]) -> type[ModuleT]:
            existing = self._classes.get(name)
            if existing is not None and existing is not cls:
                raise ValueError(
                    f"{self.what[:1].upper()}{self.what[1:]} {name!r} is already registered to "
                    f"{existing.__qualname__}; pick another name."
                )
            config_class = cls.config_class
            declared = config_class.expected_name()
            if declared != name:
                raise ValueError(
                    f"{cls.__qualname__}.config_class.expected_{config_class.registry_key} is "
                    f"{declared!r}, but it is registered as {name!r}."
                )
            setattr(cls, config_class.registry_key, name)
            self._classes[name] = cls
            return cls

        return decorator


@dataclass(kw_only=True)
class PretrainedConfig(ConfigBase):
    """Fields and checks shared by the configs of saved modules (priors, baselines).

    A family's base config sets the class attributes and declares the ``registry_key`` field as a
    ``str``; each design's config fixes its value with a class attribute
    ``expected_<registry_key>`` (e.g. ``expected_architecture: ClassVar[str | None] = "mlp"``).

    Class attributes:
        registry: The family's :class:`Registry`; :meth:`from_dict` dispatches through it.
        registry_key: The field naming the registered class (``"architecture"``, ``"kind"``).
        require_provenance: ``hook_name`` and ``model_name`` must be non-empty (priors), rather
            than merely strings (baselines, where they are optional provenance).

    Attributes:
        d_model: Size of the modelled activation vectors.
        hook_name: Full TransformerLens hook name of the training activations, e.g.
            ``"blocks.15.hook_resid_post"``.
        model_name: Name of the source model, e.g. ``"SmolLM2-135M-Instruct"``.
        norm_eps: Epsilon of the normaliser, ``std = sqrt(var + norm_eps)``.
        format_version: On-disk format version; files from a newer version are rejected.
    """

    registry: ClassVar[Registry]
    registry_key: ClassVar[str]
    require_provenance: ClassVar[bool] = True

    d_model: int
    hook_name: str = ""
    model_name: str = ""
    norm_eps: float = 1e-5
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        self._check_registered_name()
        check_positive_int("d_model", self.d_model)
        for name in ("hook_name", "model_name"):
            value = getattr(self, name)
            if not isinstance(value, str) or (self.require_provenance and not value):
                expected = "a non-empty str" if self.require_provenance else "a str"
                raise ValueError(f"{name} must be {expected}, got {value!r}.")
        check_float("norm_eps", self.norm_eps, minimum=0.0, min_open=True)
        check_positive_int("format_version", self.format_version)
        check_format_version(self.format_version, self.saved_object)

    def _check_registered_name(self) -> None:
        key, expected = self.registry_key, self.expected_name()
        value = getattr(self, key)
        if expected is not None and value != expected:
            raise ValueError(
                f"{type(self).__name__} needs {key}={expected!r}, got {value!r}; use the config "
                f"class registered for {value!r} instead."
            )
        if not isinstance(value, str) or not value:
            raise ValueError(f"{key} must be a non-empty str, got {value!r}.")

    @classmethod
    def expected_name(cls) -> str | None:
        """The registry name this config class fixes (None on a family's base config)."""
        return getattr(cls, f"expected_{cls.registry_key}", None)

    @classmethod
    def family(cls) -> type[PretrainedConfig]:
        """The family's base config: the class that set ``registry`` (``PriorConfig``)."""
        for klass in cls.__mro__:
            if "registry" in vars(klass):
                return klass
        raise TypeError(f"{cls.__name__} belongs to no family: set registry on its base config.")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PretrainedConfig:
        """Build the config class that ``data[registry_key]`` names (see ``ConfigBase``).

        On a design's config class, ``data`` must name that design (or a subclass of it).
        """
        if not isinstance(data, Mapping):
            raise TypeError(f"data must be a dict, got {type(data).__name__}.")
        key = cls.registry_key
        target = cls.registry[data.get(key)].config_class
        if not issubclass(target, cls):
            raise ValueError(
                f"{cls.__name__}.from_dict got {key}={data.get(key)!r}, which belongs to "
                f"{target.__name__}; use {cls.family().__name__}.from_dict to dispatch on the "
                f"{key}."
            )
        return target._build(data)


class PretrainedModule(nn.Module):
    """An ``nn.Module`` with a :class:`PretrainedConfig` and a normaliser, saved as a directory.

    Subclasses register every tensor as a parameter or buffer, so that the state dict holds all
    of it and :meth:`save_pretrained`/:meth:`from_pretrained` need nothing design-specific.

    Args:
        config: An instance of the class's ``config_class``; its ``d_model`` and ``norm_eps``
            size the normaliser.
    """

    config_class: ClassVar[type[PretrainedConfig]]
    config: PretrainedConfig

    def __init__(self, config: PretrainedConfig) -> None:
        super().__init__()
        if not isinstance(config, self.config_class):
            raise TypeError(
                f"{type(self).__name__} needs a {self.config_class.__name__}, got "
                f"{type(config).__name__}."
            )
        self.config = config
        self.normalizer = Normalizer(config.d_model, eps=config.norm_eps)
        # What training or fitting produced; see record_training.
        self.training_record: dict[str, Any] = {}

    def record_training(self, record: Mapping[str, Any]) -> None:
        """Keep what training or fitting produced (steps, losses, dates, the data it saw).

        The record is saved as ``training.json`` beside the weights, never in the config, which
        describes the constructor only. A later run (a resumed or continued training) replaces it
        whole. It must be JSON-serialisable; it is copied, so later edits of ``record`` do not
        leak in.
        """
        if not isinstance(record, Mapping):
            raise TypeError(f"record must be a dict, got {type(record).__name__}.")
        try:
            self.training_record = json.loads(json.dumps(dict(record)))
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"record must be JSON-serialisable (it is saved as {TRAINING_RECORD_NAME}): {exc}"
            ) from exc

    def model_card(self) -> str | None:
        """The ``README.md`` :meth:`save_pretrained` writes, or None for none.

        Modules whose config requires provenance (priors: a hook and a source model) get a card;
        baselines, whose provenance is optional, get none.
        """
        if not self.config.require_provenance:
            return None
        return build_model_card(
            self.config.to_dict(),
            self.config.registry_key,
            self.training_record,
            sum(p.numel() for p in self.parameters()),
            self.config.saved_object,
        )

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write ``config.json``, ``model.safetensors`` (the whole state dict), when there is
        one, the training record (``training.json``), the model card (``README.md``, see
        :meth:`model_card`) and the weights' ``checksums.json``, atomically.

        The directory is built next to ``directory`` and swapped in at the end, so an existing
        save is replaced only by a complete one.
        """
        tensors = {k: v.detach() for k, v in self.state_dict().items()}
        key = self.config.registry_key
        meta = {key: getattr(self.config, key), "format_version": str(FORMAT_VERSION)}
        with atomic_directory(directory) as tmp:
            atomic_write_json(tmp / CONFIG_NAME, self.config.to_dict())
            atomic_save_safetensors(tmp / WEIGHTS_NAME, tensors, metadata=meta)
            if self.training_record:
                atomic_write_json(tmp / TRAINING_RECORD_NAME, self.training_record)
            card = self.model_card()
            if card is not None:
                atomic_write_text(tmp / MODEL_CARD_NAME, card)
            write_checksums(tmp, [WEIGHTS_NAME])

    @classmethod
    def from_pretrained(
        cls: type[ModuleT],
        directory: str | os.PathLike,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        *,
        verify: bool = True,
    ) -> ModuleT:
        """Load a module saved by :meth:`save_pretrained` (no unpickling), in eval mode.

        On a family's base class (``DiffusionPrior``) it returns the class ``config.json`` names;
        on any other class it raises ValueError when the saved class is not a subclass of it.
        ``device``/``dtype`` move and cast the result (None keeps CPU and the saved dtypes).
        ``verify`` compares the weights with their ``checksums.json`` (False skips that read of
        the file, for speed); NaN/inf weights are refused either way.

        Raises:
            CorruptFileError: (a ``ValueError``) the weights' bytes changed since the save, or a
                tensor holds NaN/inf.
        """
        directory = Path(directory)
        config_path = directory / CONFIG_NAME
        if not config_path.is_file():
            raise FileNotFoundError(
                f"No {CONFIG_NAME} in {directory!s}; pass a directory written by save_pretrained."
            )
        data = read_json(config_path)
        # Files written before configs and run records were split keep the record in the config.
        legacy_record = data.pop("training", None) if isinstance(data, dict) else None
        config = cls.config_class.family().from_dict(data)
        name = getattr(config, config.registry_key)
        target = config.registry[name]
        if not issubclass(target, cls):
            raise ValueError(
                f"{directory!s} holds a {name!r} {config.saved_object} ({target.__name__}), not "
                f"a {cls.__name__}; load it with {target.__name__}.from_pretrained."
            )
        module = target(config)
        if verify:
            verify_checksums(directory)
        weights_path = directory / WEIGHTS_NAME
        load_state_dict_checked(
            module, weights_path, f"the {target.__name__} that {CONFIG_NAME} describes"
        )
        check_finite(module.state_dict(), weights_path)
        record_path = directory / TRAINING_RECORD_NAME
        record = read_json(record_path) if record_path.is_file() else legacy_record
        if record:
            module.record_training(record)
        module.eval()
        return module.to(device=device, dtype=dtype)
