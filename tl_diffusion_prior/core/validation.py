"""Argument checks shared by every stage: the one copy of the int, float and choice validators.

Each check raises ``ValueError`` naming the argument, the value that came in and what was
expected; ``hint`` appends how to fix it where the fix is not obvious. ``bool`` is rejected where
a number is expected, although Python counts it as an ``int``: ``steps=True`` is a mistake, not 1.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import Any, TypeVar

from torch import Tensor

ChoiceT = TypeVar("ChoiceT")


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type. Both a ``TypeError`` (what it is) and a ``ValueError`` (what
    the validators raised before they told the two apart), so either ``except`` catches it."""


def _fail(
    name: str, expected: str, value: Any, hint: str | None, error: type[ValueError] = ValueError
) -> ValueError:
    message = f"{name} must be {expected}, got {value!r}."
    return error(f"{message} {hint}" if hint else message)


def check_int(
    name: str,
    value: Any,
    minimum: int | None = None,
    maximum: int | None = None,
    *,
    hint: str | None = None,
) -> int:
    """Return ``value`` if it is an int (not a bool) in ``[minimum, maximum]``, else raise
    (:class:`ArgumentTypeError` for another type, ``ValueError`` out of range)."""
    wrong_type = isinstance(value, bool) or not isinstance(value, int)
    if (
        wrong_type
        or (minimum is not None and value < minimum)
        or (maximum is not None and value > maximum)
    ):
        if minimum is not None and maximum is not None:
            expected = f"an int in [{minimum}, {maximum}]"
        elif minimum is not None:
            expected = f"an int >= {minimum}"
        elif maximum is not None:
            expected = f"an int <= {maximum}"
        else:
            expected = "an int"
        raise _fail(name, expected, value, hint, ArgumentTypeError if wrong_type else ValueError)
    return value


def check_positive_int(name: str, value: Any) -> int:
    """``check_int`` with ``minimum=1``."""
    return check_int(name, value, minimum=1)


def check_float(
    name: str,
    value: Any,
    minimum: float | None = None,
    maximum: float | None = None,
    *,
    min_open: bool = False,
    max_open: bool = False,
    hint: str | None = None,
) -> float:
    """Return ``float(value)`` if it is a finite real number within the bounds, else raise.

    Ints are accepted (JSON writes ``1.0`` as ``1``); ``min_open``/``max_open`` exclude the bound
    itself, e.g. ``minimum=0.0, min_open=True`` for a strictly positive value.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(name, "a finite number", value, hint, ArgumentTypeError)
    if not math.isfinite(value):
        raise _fail(name, "a finite number", value, hint)
    if minimum is not None and (value < minimum or (min_open and value == minimum)):
        raise _fail(name, f"{'>' if min_open else '>='} {minimum}", value, hint)
    if maximum is not None and (value > maximum or (max_open and value == maximum)):
        raise _fail(name, f"{'<' if max_open else '<='} {maximum}", value, hint)
    return float(value)


def check_choice(
    name: str, value: ChoiceT, choices: Collection[Any], *, hint: str | None = None
) -> ChoiceT:
    """Return ``value`` if it is one of ``choices``, else raise listing them."""
    options = tuple(choices)  # a tuple: membership works for unhashable values too
    if value not in options:
        raise _fail(name, f"one of {options}", value, hint)
    return value


def check_noise_levels(levels: Any, batch: int) -> None:
    """``levels`` is None or a float tensor of one training noise level in [0, 1) per row."""
    if levels is not None and (
        not isinstance(levels, Tensor)
        or levels.shape != (batch,)
        or not levels.is_floating_point()
        or bool((levels < 0).any() or (levels >= 1).any())
    ):
        raise ValueError(
            "levels must be a float tensor of shape [batch] with values in [0, 1), got "
            f"{getattr(levels, 'shape', type(levels).__name__)}."
        )
