import os
from pathlib import Path

import pytest
import torch

from tl_diffusion_prior.core import serialization
from tl_diffusion_prior.core.serialization import (
    atomic_directory,
    atomic_save_safetensors,
    load_safetensors,
    recover_replaced_dir,
    replace_dir,
    safetensors_metadata,
)


def _dir(path, text):
    path.mkdir()
    (path / "f.txt").write_text(text)
    return path


def test_replace_dir_moves_into_place_and_replaces_an_existing_directory(tmp_path):
    final = tmp_path / "final"
    first = _dir(tmp_path / "a", "first")
    (first / "extra").write_text("only in the first")
    replace_dir(first, final)
    assert (final / "f.txt").read_text() == "first" and not first.exists()
    replace_dir(_dir(tmp_path / "b", "second"), final)
    assert (final / "f.txt").read_text() == "second" and not (final / "extra").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final"]  # no .old left behind


def test_atomic_directory_keeps_the_old_directory_when_the_block_fails(tmp_path):
    final = _dir(tmp_path / "final", "old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_directory(final) as tmp:
            (tmp / "f.txt").write_text("new")
            raise RuntimeError("boom")
    assert (final / "f.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final"]
    with atomic_directory(final) as tmp:
        (tmp / "f.txt").write_text("new")
    assert (final / "f.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final"]


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="names fds through /proc")
def test_safetensors_are_flushed_before_the_rename_and_the_directory_after(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", str(src)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    atomic_save_safetensors(tmp_path / "w.safetensors", {"w": torch.ones(3)})
    (_, tmp), replaced = events[0], events.index(("replace", events[0][1]))
    assert Path(tmp).parent == tmp_path and tmp.endswith(".tmp") and replaced == 1
    assert events[2:] == [("fsync", str(tmp_path))]
    assert torch.equal(load_safetensors(tmp_path / "w.safetensors")["w"], torch.ones(3))


def test_replace_dir_swaps_in_one_step_where_the_exchange_exists(tmp_path, monkeypatch):
    if serialization._RENAMEAT2 is None:
        pytest.skip("no renameat2 in this C library")
    final = _dir(tmp_path / "final", "old")
    renames = []
    monkeypatch.setattr(os, "replace", lambda *a: renames.append(a))
    replace_dir(_dir(tmp_path / "new", "new"), final)
    assert renames == []  # no moment without a directory at ``final``
    assert (final / "f.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final"]


def test_without_the_exchange_an_interrupted_replace_is_recovered(tmp_path, monkeypatch):
    monkeypatch.setattr(serialization, "exchange_paths", lambda a, b: False)
    final = _dir(tmp_path / "final", "old")
    real_replace = os.replace

    def replace_then_die(src, dst):
        real_replace(src, dst)
        if Path(dst).name == ".final.old":
            raise KeyboardInterrupt  # between the two renames

    monkeypatch.setattr(os, "replace", replace_then_die)
    with pytest.raises(KeyboardInterrupt):
        replace_dir(_dir(tmp_path / "new", "new"), final)
    monkeypatch.setattr(os, "replace", real_replace)
    assert not final.exists()
    # The next save restores the complete old directory before replacing it.
    replace_dir(_dir(tmp_path / "newer", "newer"), final)
    assert (final / "f.txt").read_text() == "newer" and not (tmp_path / ".final.old").exists()
    final.rename(tmp_path / ".final.old")
    assert recover_replaced_dir(final) and (final / "f.txt").read_text() == "newer"


def test_files_and_directories_are_refused_before_writing(tmp_path):
    (tmp_path / "file").write_text("mine")
    with pytest.raises(ValueError, match="not a directory"):
        with atomic_directory(tmp_path / "file"):
            raise AssertionError("the block must not run")
    assert (tmp_path / "file").read_text() == "mine"
    with pytest.raises(ValueError, match="is a directory"):
        atomic_save_safetensors(tmp_path, {"w": torch.ones(1)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_safetensors_metadata_reads_the_header_or_says_none(tmp_path):
    atomic_save_safetensors(tmp_path / "a.safetensors", {"w": torch.ones(1)}, {"k": "v"})
    (tmp_path / "b.safetensors").write_text("not safetensors")
    assert safetensors_metadata(tmp_path / "a.safetensors") == {"k": "v"}
    assert safetensors_metadata(tmp_path / "b.safetensors") is None
    assert safetensors_metadata(tmp_path / "missing") is None
