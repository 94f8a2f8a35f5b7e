import json
from dataclasses import dataclass, field
from typing import ClassVar

import pytest

from tl_diffusion_prior.constants import FORMAT_VERSION
from tl_diffusion_prior.core.config import ConfigBase, check_format_version, coerce_to_type


@dataclass
class Knobs(ConfigBase):
    steps: int = 3
    lr: float = 0.5
    eps: float | None = None
    scale: float | int = 2
    ts: tuple[float, ...] = (0.25, 0.5)
    sizes: tuple[tuple[int, int], ...] = ((4, 32),)
    betas: tuple[float, float] = (0.9, 0.99)
    grid: list[int] | None = None
    extra: dict = field(default_factory=dict)
    format_version: int = FORMAT_VERSION


@dataclass
class Labelled(ConfigBase):
    unknown_keys_label: ClassVar[str] = "toy settings"

    a: int = 1


def test_round_trip_through_json_restores_tuples_and_floats():
    knobs = Knobs(lr=1.0, ts=(1.0,), betas=(0.0, 1.0), grid=[2, 3], extra={"k": (1, 2)})
    data = json.loads(json.dumps(knobs.to_dict()))
    assert data["lr"] == 1 and data["ts"] == [1.0] and data["sizes"] == [[4, 32]]
    again = Knobs.from_dict(data)
    assert again == Knobs(lr=1.0, ts=(1.0,), betas=(0.0, 1.0), grid=[2, 3], extra={"k": [1, 2]})
    assert isinstance(again.ts, tuple) and isinstance(again.sizes[0], tuple)
    assert isinstance(again.betas, tuple) and isinstance(again.grid, list)


def test_to_dict_is_json_ready_and_a_copy():
    knobs = Knobs(extra={"nested": [1]})
    data = knobs.to_dict()
    assert data["ts"] == [0.25, 0.5] and data["sizes"] == [[4, 32]]
    assert data == json.loads(json.dumps(data))
    data["extra"]["nested"].append(2)
    assert knobs.extra == {"nested": [1]}


def test_ints_become_floats_only_where_the_field_is_float():
    knobs = Knobs.from_dict({"steps": 4, "lr": 1, "eps": 2, "scale": 3, "ts": [1, 0]})
    assert type(knobs.steps) is int and knobs.steps == 4
    assert type(knobs.lr) is float and knobs.lr == 1.0
    assert type(knobs.eps) is float
    assert type(knobs.scale) is int  # the field accepts ints as they are
    assert knobs.ts == (1.0, 0.0) and all(type(t) is float for t in knobs.ts)
    assert Knobs.from_dict({"lr": True}).lr is True  # a bool is not a number: left to validation
    assert Knobs.from_dict({"eps": None}).eps is None


def test_unknown_keys_are_named_with_the_known_fields():
    with pytest.raises(ValueError, match=r"Unknown keys \['bogus', 'zeta'\]") as info:
        Knobs.from_dict({"bogus": 1, "zeta": 2, "steps": 1})
    assert "Knobs" in str(info.value)
    for name in ("steps", "lr", "ts", "format_version"):
        assert repr(name) in str(info.value)
    with pytest.raises(ValueError, match=r"Unknown toy settings \['b'\]"):
        Labelled.from_dict({"b": 2})


def test_newer_format_version_is_refused_before_unknown_keys():
    with pytest.raises(ValueError, match="newer than this library supports"):
        Knobs.from_dict({"format_version": FORMAT_VERSION + 1, "key_from_the_future": 1})
    assert Knobs.from_dict({"format_version": FORMAT_VERSION}).format_version == FORMAT_VERSION
    # Configs without the field do not look at it: it is just an unknown key for them.
    with pytest.raises(ValueError, match="Unknown toy settings"):
        Labelled.from_dict({"format_version": FORMAT_VERSION + 1})
    with pytest.raises(ValueError, match="load this prior"):
        check_format_version(FORMAT_VERSION + 1, "prior")
    check_format_version(FORMAT_VERSION)
    check_format_version("not an int")  # left to the config's own validation


def test_from_dict_needs_a_mapping_and_a_dataclass():
    with pytest.raises(TypeError, match="data must be a dict"):
        Knobs._build([("steps", 1)])  # from_dict's annotation already refuses it under pytest

    class NotADataclass(ConfigBase):
        pass

    with pytest.raises(TypeError, match="not a dataclass"):
        NotADataclass.from_dict({})


@pytest.mark.parametrize(
    "value, annotation, expected",
    [
        ([1, 2], tuple[int, ...], (1, 2)),
        ([[1, 2], [3, 4]], tuple[tuple[int, int], ...], ((1, 2), (3, 4))),
        ([1, 2], tuple[float, float], (1.0, 2.0)),
        ([1, 2, 3], tuple[float, float], (1, 2, 3)),  # wrong length: validation reports it
        ([1], tuple[float, ...] | None, (1.0,)),
        (None, tuple[float, ...] | None, None),
        (1, float | None, 1.0),
        (1, float | int, 1),
        ([1], list[int], [1]),
        ("a", float, "a"),
    ],
)
def test_coerce_to_type(value, annotation, expected):
    got = coerce_to_type(value, annotation)
    assert got == expected and type(got) is type(expected)
    if isinstance(expected, tuple) and expected:
        assert [type(v) for v in got] == [type(v) for v in expected]
