"""Issue 12, items 3 and 4: nothing mislabelled, nothing corrupt.

Corrupt files (a flipped byte, NaN weights, NaN buffer rows, impossible counters) are refused on
load with an error naming the file; the hook, model name and a fingerprint of the model's weights
are recorded at capture and training and compared on resume, in eval and when steering; files
written before any of this still load.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from tests.lens_kinds import build_tiny_model
from tests.priors.helpers import build_tiny_prior, randomize_
from tests.training.helpers import CountingTokenSource, filled_buffer, tiny_config, tiny_prior
from tl_diffusion_prior.capture.buffer import ActivationRingBuffer
from tl_diffusion_prior.capture.capture import fill_buffer
from tl_diffusion_prior.constants import (
    BUFFER_SHA256_KEY,
    CHECKPOINT_META_NAME,
    CHECKPOINT_STATE_NAME,
    CHECKSUMS_NAME,
    MODEL_FINGERPRINT_KEY,
    WEIGHTS_NAME,
)
from tl_diffusion_prior.core.fingerprint import model_fingerprint
from tl_diffusion_prior.core.integrity import CorruptFileError, tensor_sha256
from tl_diffusion_prior.evaluate.baselines.base import fit_normalizer, load_baseline
from tl_diffusion_prior.evaluate.baselines.gaussian import GaussianBaseline
from tl_diffusion_prior.evaluate.plan import Baselines, check_baselines, fit_baselines
from tl_diffusion_prior.evaluate.report import run_evaluation
from tl_diffusion_prior.evaluate.settings import EvalSettings
from tl_diffusion_prior.priors import load_prior
from tl_diffusion_prior.steering import steer
from tl_diffusion_prior.training import train_prior
from tl_diffusion_prior.training.checkpoint import latest_checkpoint

HOOK = "blocks.0.hook_resid_post"
OTHER_HOOK = "blocks.1.hook_resid_post"


# ----------------------------------------------------------------------------------- helpers
def _flip_low_byte(path: Path, tensor_name: str) -> None:
    """Flip the lowest bit of the first element of ``tensor_name`` (a small, finite change)."""
    raw = bytearray(path.read_bytes())
    (header_len,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + header_len])
    start = 8 + header_len + header[tensor_name]["data_offsets"][0]
    raw[start] ^= 0x01  # little-endian: the first byte is the lowest mantissa byte
    path.write_bytes(bytes(raw))


def _rewrite(path: Path, edit, keep_checksum: bool = True) -> None:
    """Apply ``edit`` to the tensors of the safetensors file at ``path`` (metadata kept)."""
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
    tensors = load_file(path)
    edit(tensors)
    if BUFFER_SHA256_KEY in metadata:
        if keep_checksum:  # as if the bad values had been saved: only the value checks can tell
            metadata[BUFFER_SHA256_KEY] = json.dumps(tensor_sha256(tensors))
        else:
            del metadata[BUFFER_SHA256_KEY]
    save_file(tensors, str(path), metadata=metadata)


def _saved_prior(tmp_path: Path) -> Path:
    prior = randomize_(build_tiny_prior("mlp"))
    prior.save_pretrained(tmp_path / "prior")
    return tmp_path / "prior"


def _fingerprinted_prior(fingerprint: str, **overrides):
    prior = build_tiny_prior("mlp", **overrides)
    prior.record_training({MODEL_FINGERPRINT_KEY: fingerprint})
    return prior


# ------------------------------------------------------------------------------ checksums
def test_saved_prior_records_the_sha256_of_its_weights(tmp_path):
    directory = _saved_prior(tmp_path)
    recorded = json.loads((directory / CHECKSUMS_NAME).read_text())
    expected = hashlib.sha256((directory / WEIGHTS_NAME).read_bytes()).hexdigest()
    assert recorded == {WEIGHTS_NAME: expected}


def test_flipped_byte_in_prior_weights_is_an_error_naming_the_file(tmp_path):
    directory = _saved_prior(tmp_path)
    original = load_prior(directory)
    _flip_low_byte(directory / WEIGHTS_NAME, "normalizer.mean")
    with pytest.raises(CorruptFileError, match=rf"{WEIGHTS_NAME} is corrupt.*{CHECKSUMS_NAME}"):
        load_prior(directory)
    # The opt-out loads the changed weights (the change is small and finite).
    changed = load_prior(directory, verify=False)
    assert not torch.equal(changed.normalizer.mean, original.normalizer.mean)


def test_flipped_byte_in_baseline_weights_is_an_error(tmp_path):
    rows = torch.randn(200, 6, dtype=torch.float64).float()
    gaussian = GaussianBaseline.fit(rows, fit_normalizer(rows))
    gaussian.save_pretrained(tmp_path / "g")
    _flip_low_byte(tmp_path / "g" / WEIGHTS_NAME, "mean")
    with pytest.raises(CorruptFileError, match=f"{WEIGHTS_NAME} is corrupt"):
        load_baseline(tmp_path / "g")
    load_baseline(tmp_path / "g", verify=False)


def test_prior_saved_without_checksums_still_loads(tmp_path):
    directory = _saved_prior(tmp_path)
    (directory / CHECKSUMS_NAME).unlink()  # as saved before checksums existed
    _flip_low_byte(directory / WEIGHTS_NAME, "normalizer.mean")  # undetectable, and accepted
    load_prior(directory)


@pytest.mark.parametrize("tensor", ["network.input_proj.weight", "normalizer.std"])
def test_non_finite_prior_weight_is_an_error_naming_tensor_and_file(tmp_path, tensor):
    directory = _saved_prior(tmp_path)
    state = load_file(directory / WEIGHTS_NAME)
    name = tensor if tensor in state else next(k for k in state if k.endswith("weight"))
    state[name].view(-1)[0] = float("nan") if "weight" in name else float("inf")
    save_file(state, str(directory / WEIGHTS_NAME))
    (directory / CHECKSUMS_NAME).unlink()  # a file written with the bad value: no checksum help
    with pytest.raises(CorruptFileError, match=rf"{WEIGHTS_NAME} holds 1 NaN/inf.*'{name}'"):
        load_prior(directory)


# ---------------------------------------------------------------------------------- buffers
def _saved_buffer(tmp_path: Path, n: int = 64, capacity: int = 48) -> Path:
    buffer = filled_buffer(n, capacity=capacity)
    buffer.provenance = {MODEL_FINGERPRINT_KEY: "0123456789abcdef"}
    buffer.save(tmp_path / "buffer.safetensors")
    return tmp_path / "buffer.safetensors"


def test_buffer_round_trip_keeps_provenance_and_counters(tmp_path):
    path = _saved_buffer(tmp_path)
    loaded = ActivationRingBuffer.load(path)
    assert loaded.provenance == {MODEL_FINGERPRINT_KEY: "0123456789abcdef"}
    assert (loaded.num_pushed, loaded.capacity) == (64, 48)


def test_flipped_byte_in_buffer_is_an_error_naming_file_and_tensor(tmp_path):
    path = _saved_buffer(tmp_path)
    _flip_low_byte(path, "storage")
    with pytest.raises(CorruptFileError, match=r"buffer.safetensors is corrupt: tensor 'storage'"):
        ActivationRingBuffer.load(path)
    ActivationRingBuffer.load(path, verify=False)


def test_buffer_with_nan_rows_is_refused(tmp_path):
    path = _saved_buffer(tmp_path)

    def poison(state):
        state["storage"][5, 0, 2] = float("nan")
        state["storage"][9, 0, 0] = float("inf")

    _rewrite(path, poison)
    with pytest.raises(CorruptFileError, match=r"buffer.safetensors holds 2 row\(s\) with NaN"):
        ActivationRingBuffer.load(path)


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("n_written", -1, "negative counters"),
        ("write_ptr", 50, "write_ptr=50"),  # beyond capacity 48
        ("write_ptr", 3, "write_ptr=3"),  # 64 rows into 48 slots put it at 16
        ("n_masked", -5, "negative counters"),
        ("n_written", 10, "statistics over 64 rows"),
    ],
)
def test_buffer_with_impossible_counters_is_refused(tmp_path, name, value, problem):
    path = _saved_buffer(tmp_path)

    def edit(state):
        state[name] = torch.tensor(value, dtype=state[name].dtype)
        if name == "n_written" and value >= 0:
            state["write_ptr"] = torch.tensor(value % 48, dtype=torch.long)

    _rewrite(path, edit)
    with pytest.raises(CorruptFileError, match=rf"impossible counters \({problem}"):
        ActivationRingBuffer.load(path)


def test_buffer_state_of_another_capacity_is_refused():
    state = filled_buffer(64, capacity=48).state_dict()
    with pytest.raises(ValueError, match=r"has shape \(48, 1, 8\).*this buffer is \(32, 1, 8\)"):
        ActivationRingBuffer(32, 8).load_state_dict(state)


def test_buffer_saved_before_checksums_and_provenance_still_loads(tmp_path):
    buffer = filled_buffer(64, capacity=48)
    metadata = {"format_version": "1", "hook_names": json.dumps(["activation"]), "dtype": "float32"}
    save_file(buffer.state_dict(), str(tmp_path / "old.safetensors"), metadata=metadata)
    loaded = ActivationRingBuffer.load(tmp_path / "old.safetensors")
    assert loaded.provenance == {} and loaded.num_pushed == 64


# ------------------------------------------------------------------------------ fingerprints
def test_fingerprint_ignores_float_dtype_but_not_the_weights():
    model = build_tiny_model()
    fingerprint = model_fingerprint(model)
    assert len(fingerprint) == 16
    assert model_fingerprint(build_tiny_model()) == fingerprint  # same seed, same weights
    assert model_fingerprint(build_tiny_model().to(torch.bfloat16)) == fingerprint
    assert model_fingerprint(build_tiny_model(seed=1)) != fingerprint
    assert model_fingerprint(torch.nn.ReLU()) == ""


def test_capture_records_the_model_and_refuses_a_second_model(tiny_model, tmp_path):
    buffer = fill_buffer(tiny_model, CountingTokenSource(), HOOK, 40, progress=False)
    fingerprint = model_fingerprint(tiny_model)
    assert buffer.provenance[MODEL_FINGERPRINT_KEY] == fingerprint
    buffer.save(tmp_path / "b.safetensors")
    assert ActivationRingBuffer.load(tmp_path / "b.safetensors").provenance == buffer.provenance
    other = build_tiny_model(seed=1)
    kind = type(other).__name__  # HookedTransformer, or TransformerBridge on TransformerLens 4
    with pytest.raises(ValueError, match=rf"fingerprint mismatch.*'{fingerprint}'.*{kind}"):
        fill_buffer(other, CountingTokenSource(), HOOK, 40, buffer=buffer, progress=False)


def test_prior_and_checkpoint_record_the_fingerprint_and_resume_compares_it(tmp_path):
    buffer = filled_buffer()
    buffer.provenance = {MODEL_FINGERPRINT_KEY: "aaaaaaaaaaaaaaaa"}
    prior = tiny_prior()
    train_prior(prior, buffer, tiny_config(steps=4, checkpoint_dir=tmp_path))
    assert prior.training_record[MODEL_FINGERPRINT_KEY] == "aaaaaaaaaaaaaaaa"
    meta = json.loads((latest_checkpoint(tmp_path) / CHECKPOINT_META_NAME).read_text())
    assert meta["buffer"][MODEL_FINGERPRINT_KEY] == "aaaaaaaaaaaaaaaa"

    buffer.provenance = {MODEL_FINGERPRINT_KEY: "bbbbbbbbbbbbbbbb"}
    with pytest.raises(ValueError, match=r"fingerprint mismatch.*'aaaa.*'bbbb"):
        train_prior(tiny_prior(), buffer, tiny_config(steps=8, checkpoint_dir=tmp_path))


def test_flipped_byte_in_a_checkpoint_is_an_error_naming_the_file(tmp_path):
    train_prior(tiny_prior(), filled_buffer(), tiny_config(steps=4, checkpoint_dir=tmp_path))
    state_file = latest_checkpoint(tmp_path) / CHECKPOINT_STATE_NAME
    _flip_low_byte(state_file, next(iter(load_file(state_file))))
    with pytest.raises(CorruptFileError, match=rf"{CHECKPOINT_STATE_NAME} is corrupt"):
        train_prior(tiny_prior(), filled_buffer(), tiny_config(steps=8, checkpoint_dir=tmp_path))


def test_resuming_with_another_hook_is_an_error_naming_both_hooks(tmp_path):
    train_prior(tiny_prior(), filled_buffer(), tiny_config(steps=4, checkpoint_dir=tmp_path))
    prior = tiny_prior()
    prior.config.hook_name = OTHER_HOOK  # what `train --hook blocks.1... --resume` builds
    with pytest.raises(ValueError, match=rf"Hook mismatch.*'{HOOK}'.*'{OTHER_HOOK}'.*--hook"):
        train_prior(prior, filled_buffer(), tiny_config(steps=8, checkpoint_dir=tmp_path))


def test_check_compatible_compares_the_model_fingerprint():
    model = build_tiny_model()
    fingerprint = model_fingerprint(model)
    _fingerprinted_prior(fingerprint).check_compatible(model=model)
    build_tiny_prior("mlp").check_compatible(model=model)  # nothing recorded: not compared
    prior = _fingerprinted_prior("ffffffffffffffff")
    with pytest.raises(ValueError, match=rf"'ffffffffffffffff'.*'{fingerprint}'"):
        prior.check_compatible(model=model)
    with pytest.raises(ValueError, match="fingerprint mismatch"):
        prior.check_compatible(model_fingerprint=fingerprint)


def test_steering_with_a_prior_of_another_models_weights_is_an_error():
    model = build_tiny_model()
    prior = _fingerprinted_prior(
        model_fingerprint(build_tiny_model(seed=1)), d_model=64, model_name=model.cfg.model_name
    )
    with pytest.raises(ValueError, match="fingerprint mismatch"):
        with steer(model, HOOK, torch.ones(64), 1.0, prior):
            pass
    assert not any(hp._forward_hooks for hp in model.hook_dict.values())


# ---------------------------------------------------------------------------------------- eval
def _buffer_at(hook: str, fingerprint: str = "") -> ActivationRingBuffer:
    buffer = ActivationRingBuffer(64, 64, [hook])
    buffer.push(torch.randn(64, 64))
    buffer.provenance = {MODEL_FINGERPRINT_KEY: fingerprint} if fingerprint else {}
    return buffer


def test_eval_refuses_a_buffer_of_another_hook():
    with pytest.raises(ValueError, match=rf"captured at \['{OTHER_HOOK}'\].*evaluates '{HOOK}'"):
        fit_baselines(_buffer_at(OTHER_HOOK), EvalSettings.quick(), hook_name=HOOK)


def test_eval_refuses_a_buffer_or_prior_of_another_models_weights():
    model = build_tiny_model()
    prior = build_tiny_prior("mlp", d_model=64)
    settings = EvalSettings.quick()
    with pytest.raises(ValueError, match=r"fingerprint mismatch: the training buffer"):
        run_evaluation(model, [prior], _buffer_at(HOOK, "ffffffffffffffff"), settings)
    other = _fingerprinted_prior("ffffffffffffffff", d_model=64)
    with pytest.raises(ValueError, match=r"fingerprint mismatch: the prior"):
        run_evaluation(model, [other], _buffer_at(HOOK), settings)
    with pytest.raises(ValueError, match=rf"captured at \['{OTHER_HOOK}'\]"):
        run_evaluation(model, [prior], _buffer_at(OTHER_HOOK), settings)


def test_eval_refuses_baselines_of_another_hook_or_model():
    rows = torch.randn(200, 6)
    gaussian = GaussianBaseline.fit(rows, fit_normalizer(rows), hook_name=OTHER_HOOK)
    with pytest.raises(ValueError, match=rf"Hook mismatch: the gaussian baseline.*'{OTHER_HOOK}'"):
        check_baselines(Baselines(gaussian, []), HOOK)
    gaussian = GaussianBaseline.fit(rows, fit_normalizer(rows), hook_name=HOOK)
    gaussian.record_training({MODEL_FINGERPRINT_KEY: "ffffffffffffffff"})
    with pytest.raises(ValueError, match="fingerprint mismatch"):
        check_baselines(Baselines(gaussian, []), HOOK, model_fingerprint="0123456789abcdef")
    check_baselines(Baselines(gaussian, []), HOOK)  # no fingerprint to compare: passes


def test_fitted_baselines_record_the_buffers_model(tmp_path):
    rows = torch.randn(300, 64)
    buffer = ActivationRingBuffer(300, 64, [HOOK])
    buffer.push(rows)
    buffer.provenance = {MODEL_FINGERPRINT_KEY: "0123456789abcdef"}
    settings = EvalSettings.quick(sae_sizes=[])
    baselines = fit_baselines(buffer, settings, hook_name=HOOK)
    assert baselines.gaussian.training_record[MODEL_FINGERPRINT_KEY] == "0123456789abcdef"
