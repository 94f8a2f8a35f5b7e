"""Validation shared by every config dataclass (priors, baselines, training helpers)."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

ConfigT = TypeVar("ConfigT")


def check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}.")


def build_config(target: type[ConfigT], data: dict[str, Any]) -> ConfigT:
    """``target(**data)``, refusing keys ``target`` does not declare with a clear message."""
    known = {f.name for f in dataclasses.fields(target) if f.init}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(
            f"Unknown keys {unknown} for {target.__name__}; expected a subset of "
            f"{sorted(known)}. The file may come from another version of the library."
        )
    return target(**data)
