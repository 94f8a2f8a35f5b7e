"""``ConfigBase``: the one ``to_dict``/``from_dict`` round trip of every config dataclass.

Configs travel as JSON (``config.json`` of a saved prior or baseline, checkpoint metadata, the
evaluation report, ``--settings`` on the command line). A JSON round trip turns tuples into lists
and ``1.0`` into ``1``, and a file may come from another version of the library, so
:meth:`ConfigBase.from_dict`:

* refuses a ``format_version`` newer than :data:`~tl_diffusion_prior.constants.FORMAT_VERSION`
  before anything else (a newer file may use keys this version does not know);
* refuses unknown keys, naming them and the known fields;
* restores the declared types: a list becomes a tuple where the field is a ``tuple[...]`` (nested
  tuples too) and an int becomes a float where the field is a ``float`` and not an ``int``.

The values themselves are then checked by the dataclass's own ``__post_init__``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import types
import typing
from collections.abc import Mapping
from typing import Any, ClassVar, TypeVar

from tl_diffusion_prior.constants import FORMAT_VERSION

ConfigT = TypeVar("ConfigT", bound="ConfigBase")


class ConfigBase:
    """Mixin for ``@dataclass`` configs: a JSON-ready :meth:`to_dict` and a checked
    :meth:`from_dict` (see the module docstring). Subclasses must be dataclasses.

    Class attributes:
        unknown_keys_label: How the unknown-key error names the keys
            (``"Unknown <label> [...]"``), e.g. ``"evaluation settings"``.
        saved_object: What a too-new ``format_version`` error says cannot be loaded
            (``"upgrade tl_diffusion_prior to load this <saved_object>"``).
        absent_key_defaults: Values :meth:`from_dict` uses for fields the data lacks, where they
            differ from the dataclass default: a field added later whose new default would
            change what a file written before it means (and make its weights fail to load).
    """

    unknown_keys_label: ClassVar[str] = "keys"
    saved_object: ClassVar[str] = "config"
    absent_key_defaults: ClassVar[dict[str, Any]] = {}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field: a deep copy with tuples as lists.

        The result equals what reading back the JSON it serialises to gives, so a config
        compares equal to itself after a save and a load.
        """
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls: type[ConfigT], data: Mapping[str, Any]) -> ConfigT:
        """Build ``cls`` from JSON-like ``data`` (as written by :meth:`to_dict`).

        Raises:
            TypeError: ``data`` is not a mapping.
            ValueError: ``format_version`` is newer than this library's, or ``data`` has keys
                ``cls`` does not declare (the message lists the known ones), or a value is
                invalid (from ``__post_init__``).
        """
        return cls._build(data)

    @classmethod
    def _build(cls: type[ConfigT], data: Any) -> ConfigT:
        """:meth:`from_dict` without any dispatch to another class: always builds ``cls``."""
        # ``data`` is typed Any: it comes from files, and checking it is this method's job.
        if not isinstance(data, Mapping):
            raise TypeError(f"data must be a dict, got {type(data).__name__}.")
        types_by_field = _field_types(cls)
        if "format_version" in types_by_field:
            check_format_version(data.get("format_version"), cls.saved_object)
        unknown = sorted(set(data) - set(types_by_field))
        if unknown:
            raise ValueError(
                f"Unknown {cls.unknown_keys_label} {unknown}; {cls.__name__} expects a subset of "
                f"{sorted(types_by_field)}. Remove them, or use the library version that wrote "
                "the data."
            )
        fields = {k: v for k, v in cls.absent_key_defaults.items() if k not in data}
        fields.update({k: coerce_to_type(v, types_by_field[k]) for k, v in data.items()})
        return cls(**fields)


def check_format_version(version: Any, saved_object: str = "config") -> None:
    """Refuse a ``format_version`` newer than this library's; anything else is left to the
    config's own validation (which also rejects non-positive or non-int versions)."""
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        raise ValueError(
            f"format_version {version} is newer than this library supports "
            f"({FORMAT_VERSION}); upgrade tl_diffusion_prior to load this {saved_object}."
        )


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    """Init field name -> resolved type annotation (the modules use postponed annotations)."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls.__name__} uses ConfigBase but is not a dataclass; decorate it.")
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def coerce_to_type(value: Any, annotation: Any) -> Any:
    """Undo what JSON does to ``value`` for a field annotated ``annotation``.

    Lists become tuples for ``tuple[...]`` fields (elementwise, so ``tuple[tuple[int, int], ...]``
    gets tuples of tuples) and ints become floats for ``float`` fields. Anything else, including
    values of the wrong type, is returned unchanged for the config's own validation to judge.
    """
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        if value is None:
            return None
        if len(options) == 1:
            return coerce_to_type(value, options[0])
        if _is_plain_int(value) and float in options and int not in options:
            return float(value)
        tuple_options = [a for a in options if typing.get_origin(a) is tuple or a is tuple]
        if isinstance(value, list) and len(tuple_options) == 1:
            return coerce_to_type(value, tuple_options[0])
        return value
    if annotation is float and _is_plain_int(value):
        return float(value)
    if (origin is tuple or annotation is tuple) and isinstance(value, list | tuple):
        args = typing.get_args(annotation)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(coerce_to_type(v, args[0]) for v in value)
        if args and args != ((),) and len(args) == len(value):
            return tuple(coerce_to_type(v, a) for v, a in zip(value, args, strict=True))
        return tuple(value)
    return value


def _is_plain_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
