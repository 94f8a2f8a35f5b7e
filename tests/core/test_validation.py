import math

import pytest

from tl_diffusion_prior.core.validation import (
    ArgumentTypeError,
    check_choice,
    check_float,
    check_int,
    check_positive_int,
)


def test_check_int_returns_valid_values():
    assert check_int("n", 0) == 0
    assert check_int("n", 5, minimum=5) == 5
    assert check_int("n", 7, minimum=0, maximum=7) == 7
    assert check_int("n", -3, maximum=-3) == -3
    assert check_positive_int("n", 1) == 1


@pytest.mark.parametrize(
    "value, bounds, message",
    [
        (0, dict(minimum=1), r"n must be an int >= 1, got 0\."),
        (True, dict(minimum=0), r"n must be an int >= 0, got True\."),
        (1.0, dict(minimum=0), r"n must be an int >= 0, got 1\.0\."),
        ("3", {}, r"n must be an int, got '3'\."),
        (4, dict(minimum=0, maximum=3), r"n must be an int in \[0, 3\], got 4\."),
        (-1, dict(minimum=0, maximum=3), r"n must be an int in \[0, 3\], got -1\."),
        (9, dict(maximum=8), r"n must be an int <= 8, got 9\."),
    ],
)
def test_check_int_rejects_with_the_name_value_and_range(value, bounds, message):
    with pytest.raises(ValueError, match=message):
        check_int("n", value, **bounds)


def test_check_positive_int_rejects_zero_and_bools():
    for value in (0, -2, False, True, 2.0, None):
        with pytest.raises(ValueError, match="size must be an int >= 1"):
            check_positive_int("size", value)


def test_hint_is_appended():
    with pytest.raises(
        ValueError, match=r"rank must be an int in \[0, 1\], got 2\. Pass a rank\.$"
    ):
        check_int("rank", 2, minimum=0, maximum=1, hint="Pass a rank.")


def test_check_float_accepts_ints_and_returns_floats():
    value = check_float("lr", 1, minimum=0.0, min_open=True)
    assert value == 1.0 and isinstance(value, float)
    assert check_float("x", 0.0, minimum=0.0) == 0.0
    assert check_float("x", 1.0, maximum=1.0) == 1.0


@pytest.mark.parametrize(
    "value, bounds, message",
    [
        (math.nan, {}, "x must be a finite number, got nan"),
        (math.inf, dict(minimum=0.0), "x must be a finite number, got inf"),
        (True, {}, "x must be a finite number, got True"),
        ("0.5", {}, "x must be a finite number, got '0.5'"),
        (0.0, dict(minimum=0.0, min_open=True), r"x must be > 0\.0, got 0\.0\."),
        (-0.1, dict(minimum=0.0), r"x must be >= 0\.0, got -0\.1\."),
        (1.0, dict(maximum=1.0, max_open=True), r"x must be < 1\.0, got 1\.0\."),
        (1.5, dict(minimum=0.0, maximum=1.0), r"x must be <= 1\.0, got 1\.5\."),
    ],
)
def test_check_float_rejects_with_the_bound_that_failed(value, bounds, message):
    with pytest.raises(ValueError, match=message):
        check_float("x", value, **bounds)


def test_check_choice():
    assert check_choice("mode", "b", ("a", "b")) == "b"
    with pytest.raises(ValueError, match=r"mode must be one of \('a', 'b'\), got 'c'\."):
        check_choice("mode", "c", ("a", "b"))
    # An unhashable value is reported, not a TypeError from a set lookup.
    with pytest.raises(ValueError, match="mode must be one of"):
        check_choice("mode", ["a"], {"a", "b"})


def test_a_wrong_type_is_a_type_error_and_a_value_error():
    for check, value in [
        (check_int, 1.5),
        (check_int, True),
        (check_float, "1"),
        (check_float, None),
    ]:
        with pytest.raises(ArgumentTypeError) as info:
            check("n", value)
        assert isinstance(info.value, TypeError) and isinstance(info.value, ValueError)
    # Out of range is a plain ValueError.
    for check, value, minimum in [(check_int, -1, 0), (check_float, -1.0, 0.0)]:
        with pytest.raises(ValueError) as info:
            check("n", value, minimum=minimum)
        assert not isinstance(info.value, TypeError)
    with pytest.raises(ValueError) as info:
        check_float("n", math.inf)
    assert not isinstance(info.value, TypeError)
