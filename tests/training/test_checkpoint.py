import json

import pytest
import torch

from tests.training.helpers import filled_buffer, tiny_config, tiny_prior
from tl_diffusion_prior.constants import CHECKPOINT_META_NAME, CHECKPOINT_STATE_NAME
from tl_diffusion_prior.training import checkpoint as ckpt
from tl_diffusion_prior.training.trainer import train_prior


def _save(run_dir, step, value=1.0, keep_last=1):
    return ckpt.save_checkpoint(
        run_dir,
        step,
        tensors={"model/w": torch.full((3,), value)},
        meta={"note": f"step {step}"},
        rank_tensors={"rng/x": torch.arange(4, dtype=torch.uint8)},
        rank_meta={"refill": None},
        keep_last=keep_last,
    )


def test_save_and_load_round_trip(tmp_path):
    path = _save(tmp_path, 7, value=2.5)
    assert path == tmp_path / "step_00000007"
    state = ckpt.load_checkpoint(path)
    assert state.step == 7 and state.meta["note"] == "step 7"
    assert state.meta["world_size"] == 1 and state.meta["format_version"] >= 1
    assert torch.equal(state.tensors["model/w"], torch.full((3,), 2.5))
    assert torch.equal(state.rank_tensors["rng/x"], torch.arange(4, dtype=torch.uint8))
    assert state.rank_meta == {"refill": None}


def test_latest_ignores_incomplete_and_temporary_directories(tmp_path):
    assert ckpt.latest_checkpoint(tmp_path / "nothing") is None
    _save(tmp_path, 3, keep_last=5)
    _save(tmp_path, 5, keep_last=5)
    (tmp_path / "step_00000009").mkdir()  # no metadata: incomplete
    (tmp_path / ".step_00000011.tmp").mkdir()
    assert ckpt.latest_checkpoint(tmp_path).name == "step_00000005"


def test_keep_last_prunes_older_checkpoints(tmp_path):
    for step in (1, 2, 3, 4):
        _save(tmp_path, step, keep_last=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_00000003", "step_00000004"]


def test_crash_during_save_keeps_previous_checkpoint_and_leaves_no_partial_dir(
    tmp_path, monkeypatch
):
    _save(tmp_path, 4, value=4.0)
    real_save = ckpt.atomic_save_safetensors

    def failing_save(path, tensors, metadata=None):
        if path.name == CHECKPOINT_STATE_NAME:
            raise OSError("disk full (simulated)")
        return real_save(path, tensors, metadata=metadata)

    monkeypatch.setattr(ckpt, "atomic_save_safetensors", failing_save)
    with pytest.raises(OSError, match="disk full"):
        _save(tmp_path, 8, value=8.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_00000004"]
    state = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path))
    assert state.step == 4 and torch.equal(state.tensors["model/w"], torch.full((3,), 4.0))


def test_crash_during_training_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    real_save = ckpt.atomic_save_safetensors
    saves = []

    def failing_second_checkpoint(path, tensors, metadata=None):
        if path.name == CHECKPOINT_STATE_NAME:
            saves.append(path)
            if len(saves) == 2:
                raise OSError("killed while writing (simulated)")
        return real_save(path, tensors, metadata=metadata)

    monkeypatch.setattr(ckpt, "atomic_save_safetensors", failing_second_checkpoint)
    with pytest.raises(OSError, match="simulated"):
        train_prior(tiny_prior(), filled_buffer(), tiny_config(checkpoint_dir=tmp_path))
    names = sorted(p.name for p in tmp_path.iterdir())
    assert [n for n in names if "step" in n] == ["step_00000004"]
    monkeypatch.undo()
    result = train_prior(tiny_prior(), filled_buffer(), tiny_config(checkpoint_dir=tmp_path))
    assert result.steps == 12 and result.stopped_reason == "completed"


def test_load_rejects_incomplete_newer_and_other_world_size(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a complete checkpoint"):
        ckpt.load_checkpoint(tmp_path)
    path = _save(tmp_path, 1)
    meta = json.loads((path / CHECKPOINT_META_NAME).read_text())
    (path / CHECKPOINT_META_NAME).write_text(json.dumps({**meta, "format_version": 999}))
    with pytest.raises(ValueError, match="newer"):
        ckpt.load_checkpoint(path)
    (path / CHECKPOINT_META_NAME).write_text(json.dumps({**meta, "world_size": 4}))
    with pytest.raises(ValueError, match="same number of processes"):
        ckpt.load_checkpoint(path)
