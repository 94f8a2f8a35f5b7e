"""The packaging script's session records (``scripts/ship_default_prior.py``)."""

import importlib.util
import json
from pathlib import Path

import pytest

from tl_diffusion_prior.constants import TRAINING_RECORD_NAME

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "ship_default_prior.py"


@pytest.fixture(scope="module")
def ship():
    spec = importlib.util.spec_from_file_location("ship_default_prior", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _saved_session(directory: Path, steps: int, command: str) -> str:
    directory.mkdir()
    record = {"steps": steps, "command": command, "code_version": "abc"}
    (directory / TRAINING_RECORD_NAME).write_text(json.dumps(record))
    return str(directory)


def test_without_earlier_sessions_the_record_is_kept(ship):
    record = {"steps": 36000, "command": "train --resume"}
    assert ship._with_earlier_sessions(record, []) is record


def test_earlier_sessions_replace_their_step_ranges_with_their_own_records(ship, tmp_path):
    dirs = [
        _saved_session(tmp_path / "first", 18000, "train --steps 18000"),
        _saved_session(tmp_path / "second", 30000, "train --steps 30000 --resume"),
    ]
    record = {
        "steps": 36000,
        "command": "train --steps 36000 --resume",
        "earlier_sessions": [
            {"from_step": 0, "to_step": 18000},
            {"from_step": 18000, "to_step": 30000},
        ],
    }
    shipped = ship._with_earlier_sessions(record, dirs)
    assert shipped["command"] == "train --steps 36000 --resume"
    assert [(s["from_step"], s["to_step"], s["command"]) for s in shipped["earlier_sessions"]] == [
        (0, 18000, "train --steps 18000"),
        (18000, 30000, "train --steps 30000 --resume"),
    ]


def test_a_legacy_record_without_step_ranges_takes_the_earlier_sessions(ship, tmp_path):
    dirs = [_saved_session(tmp_path / "first", 18000, "train --steps 18000")]
    shipped = ship._with_earlier_sessions({"steps": 36000}, dirs)
    assert shipped["earlier_sessions"][0]["to_step"] == 18000


def test_an_earlier_session_that_does_not_end_where_the_run_resumed_is_refused(ship, tmp_path):
    dirs = [_saved_session(tmp_path / "first", 12000, "train --steps 12000")]
    record = {"steps": 36000, "earlier_sessions": [{"from_step": 0, "to_step": 18000}]}
    with pytest.raises(SystemExit, match="end at step 12000.*resumed at step 18000"):
        ship._with_earlier_sessions(record, dirs)


def test_the_shipped_prior_is_replaced_only_when_asked(ship, tmp_path, monkeypatch):
    shipped = tmp_path / "default_prior"
    shipped.mkdir()
    (shipped / "notes.txt").write_text("not a prior")
    # Refused before the trained prior is even read: --trained does not exist.
    for extra in ([], ["--overwrite"]):
        argv = ["ship", "--trained", str(tmp_path / "missing"), "--out", str(shipped), *extra]
        monkeypatch.setattr("sys.argv", argv)
        with pytest.raises(ValueError, match="--out"):
            ship.main()
    assert (shipped / "notes.txt").read_text() == "not a prior"


def test_the_packaged_prior_needs_overwrite(ship, tmp_path, monkeypatch):
    argv = ["ship", "--trained", str(tmp_path / "missing")]  # --out: the package's own folder
    monkeypatch.setattr("sys.argv", argv)
    with pytest.raises(ValueError, match="Pass --overwrite"):
        ship.main()
