import pytest

from tl_diffusion_prior.core.serialization import atomic_directory, replace_dir


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
