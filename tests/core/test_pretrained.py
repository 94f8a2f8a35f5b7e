"""The save/load framework on a toy family (its own registry), independent of priors/baselines."""

import json
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from tl_diffusion_prior.constants import (
    CHECKSUMS_NAME,
    CONFIG_NAME,
    FORMAT_VERSION,
    TRAINING_RECORD_NAME,
    WEIGHTS_NAME,
)
from tl_diffusion_prior.core.pretrained import (
    PretrainedConfig,
    PretrainedModule,
    Registry,
    UnknownNameError,
)

TOYS: Registry = Registry("toy kind", hint="Import the toys module.")


@dataclass(kw_only=True)
class ToyConfig(PretrainedConfig):
    registry: ClassVar[Registry] = TOYS
    registry_key: ClassVar[str] = "kind"
    require_provenance: ClassVar[bool] = False
    saved_object: ClassVar[str] = "toy"
    expected_kind: ClassVar[str | None] = None

    kind: str


@dataclass(kw_only=True)
class LinearToyConfig(ToyConfig):
    expected_kind: ClassVar[str | None] = "linear"
    kind: str = "linear"
    width: int = 3


@dataclass(kw_only=True)
class BiasToyConfig(ToyConfig):
    expected_kind: ClassVar[str | None] = "bias"
    kind: str = "bias"


class Toy(PretrainedModule):
    config_class = ToyConfig


@TOYS.register("linear")
class LinearToy(Toy):
    config_class = LinearToyConfig

    def __init__(self, config: LinearToyConfig) -> None:
        super().__init__(config)
        self.proj = nn.Linear(config.d_model, config.width)


@TOYS.register("bias")
class BiasToy(Toy):
    config_class = BiasToyConfig

    def __init__(self, config: BiasToyConfig) -> None:
        super().__init__(config)
        self.register_buffer("bias", torch.zeros(config.d_model, dtype=torch.float64))


def linear_toy(**fields) -> LinearToy:
    toy = LinearToy(LinearToyConfig(d_model=4, **fields))
    with torch.no_grad():
        toy.proj.weight.copy_(torch.arange(12.0).reshape(3, 4))
    toy.normalizer.set_stats(torch.ones(4), torch.full((4,), 4.0))
    return toy


# ------------------------------------------------------------------------------- Registry
def test_registry_reads_like_a_dict():
    assert TOYS["linear"] is LinearToy
    assert sorted(TOYS) == ["bias", "linear"] and len(TOYS) == 2
    assert "bias" in TOYS and "cube" not in TOYS and ["unhashable"] not in TOYS
    assert TOYS.get("cube") is None
    assert dict(TOYS.items()) == {"linear": LinearToy, "bias": BiasToy}
    assert LinearToy.kind == "linear"  # the registry key becomes a class attribute


def test_unknown_name_lists_registered_ones_and_the_hint():
    for error in (ValueError, KeyError, UnknownNameError):
        with pytest.raises(error):
            TOYS["cube"]
    with pytest.raises(ValueError) as info:
        TOYS["cube"]
    assert str(info.value) == (
        "Unknown toy kind 'cube'; registered: ['bias', 'linear']. Import the toys module."
    )


def test_duplicate_and_mismatched_registrations_are_refused():
    with pytest.raises(ValueError, match="Toy kind 'linear' is already registered to LinearToy"):

        @TOYS.register("linear")
        class OtherLinear(LinearToy):
            pass

    assert TOYS.register("linear")(LinearToy) is LinearToy  # the same class again is fine
    with pytest.raises(ValueError, match=r"expected_kind is 'bias', but it is registered as"):

        @TOYS.register("square")
        class Square(BiasToy):
            pass

    assert sorted(TOYS) == ["bias", "linear"]


# ------------------------------------------------------------------------------- configs
def test_config_from_dict_dispatches_on_the_registry_key():
    data = json.loads(json.dumps(LinearToyConfig(d_model=4, width=5).to_dict()))
    assert data["kind"] == "linear" and data["format_version"] == FORMAT_VERSION
    config = ToyConfig.from_dict(data)
    assert type(config) is LinearToyConfig and config.width == 5
    assert LinearToyConfig.from_dict(data) == config
    with pytest.raises(ValueError, match="belongs to LinearToyConfig; use ToyConfig.from_dict"):
        BiasToyConfig.from_dict(data)
    with pytest.raises(ValueError, match="Unknown toy kind 'cube'"):
        ToyConfig.from_dict({**data, "kind": "cube"})
    with pytest.raises(ValueError, match=r"Unknown keys \['depth'\]"):
        ToyConfig.from_dict({**data, "depth": 2})
    with pytest.raises(ValueError, match="upgrade tl_diffusion_prior to load this toy"):
        ToyConfig.from_dict({**data, "format_version": FORMAT_VERSION + 1})
    assert ToyConfig.from_dict({**data, "norm_eps": 1}).norm_eps == 1.0


def test_config_validation():
    with pytest.raises(ValueError, match="LinearToyConfig needs kind='linear', got 'bias'"):
        LinearToyConfig(d_model=4, kind="bias")
    with pytest.raises(ValueError, match="d_model"):
        LinearToyConfig(d_model=0)
    with pytest.raises(ValueError, match="norm_eps"):
        LinearToyConfig(d_model=4, norm_eps=0.0)
    with pytest.raises(ValueError, match="hook_name must be a str"):
        LinearToyConfig(d_model=4, hook_name=None)
    with pytest.raises(ValueError, match="newer"):
        LinearToyConfig(d_model=4, format_version=FORMAT_VERSION + 1)
    assert LinearToyConfig(d_model=4).hook_name == ""  # provenance is optional here

    @dataclass(kw_only=True)
    class StrictToyConfig(LinearToyConfig):
        require_provenance: ClassVar[bool] = True

    with pytest.raises(ValueError, match="hook_name must be a non-empty str"):
        StrictToyConfig(d_model=4, model_name="m")
    assert StrictToyConfig(d_model=4, hook_name="h", model_name="m").model_name == "m"


def test_the_training_record_must_be_json_and_is_copied():
    toy = linear_toy()
    with pytest.raises(ValueError, match="JSON-serialisable"):
        toy.record_training({"when": object()})
    with pytest.raises(TypeError, match="record"):
        toy.record_training([("rows", 1)])
    record = {"rows": [1, 2]}
    toy.record_training(record)
    record["rows"].append(3)
    assert toy.training_record == {"rows": [1, 2]}


def test_a_record_kept_in_an_old_config_loads_as_the_training_record(tmp_path):
    toy = linear_toy()
    toy.save_pretrained(tmp_path / "toy")
    config = json.loads((tmp_path / "toy" / CONFIG_NAME).read_text())
    (tmp_path / "toy" / CONFIG_NAME).write_text(json.dumps({**config, "training": {"rows": 3}}))
    loaded = Toy.from_pretrained(tmp_path / "toy")
    assert loaded.training_record == {"rows": 3}
    assert loaded.config == toy.config


def test_module_needs_its_config_class():
    with pytest.raises(TypeError, match="LinearToy needs a LinearToyConfig, got BiasToyConfig"):
        LinearToy(BiasToyConfig(d_model=4))


# --------------------------------------------------------------------------- save / load
def test_save_load_round_trip(tmp_path):
    toy = linear_toy(hook_name="blocks.0.hook_resid_post")
    toy.record_training({"rows": 7})
    toy.save_pretrained(tmp_path / "toy")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["toy"]  # no temporary left behind
    files = sorted(p.name for p in (tmp_path / "toy").iterdir())
    assert files == [CHECKSUMS_NAME, CONFIG_NAME, WEIGHTS_NAME, TRAINING_RECORD_NAME]
    saved = json.loads((tmp_path / "toy" / CONFIG_NAME).read_text())
    assert saved == toy.config.to_dict() and "training" not in saved
    assert json.loads((tmp_path / "toy" / TRAINING_RECORD_NAME).read_text()) == {"rows": 7}
    assert set(load_file(tmp_path / "toy" / WEIGHTS_NAME)) == set(toy.state_dict())

    for loader in (Toy, LinearToy):
        loaded = loader.from_pretrained(tmp_path / "toy")
        assert type(loaded) is LinearToy and not loaded.training
        assert loaded.config == toy.config
        assert loaded.training_record == {"rows": 7}
        for key, value in toy.state_dict().items():
            torch.testing.assert_close(loaded.state_dict()[key], value, rtol=0, atol=0)


def test_load_casts_and_checks_the_class(tmp_path):
    toy = BiasToy(BiasToyConfig(d_model=4))
    toy.save_pretrained(tmp_path / "toy")
    cast = Toy.from_pretrained(tmp_path / "toy", dtype=torch.float32)
    assert cast.bias.dtype == torch.float32
    assert cast.normalizer.mean.dtype == torch.float32
    assert Toy.from_pretrained(tmp_path / "toy").bias.dtype == torch.float64
    with pytest.raises(ValueError, match=r"holds a 'bias' toy \(BiasToy\), not a LinearToy"):
        LinearToy.from_pretrained(tmp_path / "toy")
    with pytest.raises(FileNotFoundError, match=CONFIG_NAME):
        Toy.from_pretrained(tmp_path / "missing")


def test_load_refuses_weights_that_do_not_match_the_config(tmp_path):
    linear_toy().save_pretrained(tmp_path / "toy")
    data = json.loads((tmp_path / "toy" / CONFIG_NAME).read_text())
    (tmp_path / "toy" / CONFIG_NAME).write_text(json.dumps({**data, "width": 2}))
    with pytest.raises(ValueError, match=r"does not match.*shape mismatches \['proj.bias'"):
        Toy.from_pretrained(tmp_path / "toy")
