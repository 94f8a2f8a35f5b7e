"""Nothing lost (issue 12, items 1, 2 and 6): saves interrupted at any moment leave the complete old
or the complete new result, and the command line refuses output paths it must not write to before
any model loads."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from tests.training.helpers import filled_buffer, tiny_prior
from tl_diffusion_prior.capture.buffer import ActivationRingBuffer
from tl_diffusion_prior.cli.main import build_parser
from tl_diffusion_prior.core import paths, serialization
from tl_diffusion_prior.priors import load_prior
from tl_diffusion_prior.training.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)

REPO = Path(__file__).resolve().parents[2]
KILLED = 86
needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="kills a forked child")

# Every file-system step a save takes; the child dies just before the n-th call of any of them.
_STEPS = [
    (os, "replace"),
    (os, "rename"),
    (os, "fsync"),
    (os, "unlink"),
    (os, "rmdir"),
    (os, "mkdir"),
    (shutil, "rmtree"),
    (serialization, "exchange_paths"),
    (serialization, "save_file"),
]


def _run_killed_at(step: int, save, *, exchange: bool) -> int:
    """Run ``save()`` in a forked child that dies with ``os._exit`` (no cleanup, no ``finally``:
    as SIGKILL would) just before its ``step``-th file-system operation. Returns the child's exit
    code: KILLED, or 0 when the save finished first."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            if not exchange:
                serialization.exchange_paths = lambda a, b: False
            calls = [0]

            def wrap(function):
                def wrapped(*args, **kwargs):
                    if calls[0] == step:
                        os._exit(KILLED)
                    calls[0] += 1
                    return function(*args, **kwargs)

                return wrapped

            for owner, name in _STEPS:
                setattr(owner, name, wrap(getattr(owner, name)))
            save()
        except BaseException:
            os._exit(1)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _kill_at_every_step(save, which, *, exchange: bool = True, after_kill=None) -> int:
    """Kill ``save`` before each of its steps in turn; ``which()`` must then say "old" or "new".

    Returns how many steps the save takes.
    """
    seen = set()
    for step in range(1000):
        code = _run_killed_at(step, save, exchange=exchange)
        assert code in (KILLED, 0), f"the save failed at step {step} (exit code {code})"
        if after_kill is not None:
            after_kill()
        label = which()
        seen.add(label)
        if code == 0:
            assert label == "new"
            break
    else:
        raise AssertionError("the save never finished")
    assert seen == {"old", "new"}
    return step


def _state_label(state: dict[str, torch.Tensor], versions: dict[str, dict]) -> str:
    for label, reference in versions.items():
        if state.keys() == reference.keys() and all(
            torch.equal(state[k], reference[k]) for k in reference
        ):
            return label
    raise AssertionError("the path holds neither the old nor the new result")


def _prior_label(path: Path, versions: dict[str, dict]) -> str:
    assert path.is_dir(), f"nothing at {path}"
    return _state_label(load_prior(path).state_dict(), versions)


# --------------------------------------------------------------------------- interrupted saves
@needs_fork
@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_save_pretrained_killed_at_any_step_leaves_the_old_or_the_new_prior(tmp_path, exchange):
    if exchange and serialization._RENAMEAT2 is None:
        pytest.skip("no renameat2 in this C library")
    path = tmp_path / "prior"
    old, new = tiny_prior(seed=0), tiny_prior(seed=1)
    versions = {"old": old.state_dict(), "new": new.state_dict()}
    old.save_pretrained(path)

    def after_kill():
        # Without the atomic swap, a kill between the two renames is undone by the next save or
        # the command line's output check; both call this.
        serialization.recover_replaced_dir(path)

    def which():
        label = _prior_label(path, versions)
        if label == "new":  # start each round from the old prior again
            shutil.rmtree(path)
            old.save_pretrained(path)
        return label

    steps = _kill_at_every_step(
        lambda: new.save_pretrained(path), which, exchange=exchange, after_kill=after_kill
    )
    assert steps > 5


@needs_fork
def test_buffer_save_killed_at_any_step_leaves_the_old_or_the_new_buffer(tmp_path):
    path = tmp_path / "buffer.safetensors"
    old, new = filled_buffer(64, seed=0), filled_buffer(64, seed=1)
    versions = {"old": old.state_dict(), "new": new.state_dict()}
    old.save(path)

    def which():
        label = _state_label(ActivationRingBuffer.load(path).state_dict(), versions)
        if label == "new":
            old.save(path)
        return label

    _kill_at_every_step(lambda: new.save(path), which)


@needs_fork
@pytest.mark.parametrize("new_step", [2, 1], ids=["next-step", "same-step"])
def test_checkpoint_save_killed_at_any_step_leaves_the_old_or_the_new_checkpoint(
    tmp_path, new_step
):
    run_dir = tmp_path / "run"

    def save(step, value):
        save_checkpoint(
            run_dir,
            step,
            tensors={"w": torch.full((4,), float(value))},
            meta={"value": value},
            rank_tensors={"r": torch.full((2,), float(value))},
            rank_meta={"value": value},
        )

    save(1, 1)

    def which():
        latest = latest_checkpoint(run_dir)
        assert latest is not None, "no complete checkpoint left"
        state = load_checkpoint(latest)
        value = state.meta["value"]
        assert state.rank_meta["value"] == value
        assert torch.equal(state.tensors["w"], torch.full((4,), float(value)))
        assert torch.equal(state.rank_tensors["r"], torch.full((2,), float(value)))
        assert (state.step, value) in ((1, 1), (new_step, 2))
        if value == 2:
            shutil.rmtree(run_dir)
            save(1, 1)
        return "new" if value == 2 else "old"

    _kill_at_every_step(lambda: save(new_step, 2), which)


_WORKER = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import torch

    from tests.training.helpers import filled_buffer, tiny_prior
    from tl_diffusion_prior.training.checkpoint import save_checkpoint

    root = Path(sys.argv[1])
    priors = [tiny_prior(seed=0), tiny_prior(seed=1)]
    buffers = [filled_buffer(64, seed=0), filled_buffer(64, seed=1)]
    print("ready", flush=True)
    step = 1
    while True:
        version = step % 2
        priors[version].save_pretrained(root / "prior")
        buffers[version].save(root / "buffer.safetensors")
        save_checkpoint(
            root / "run", step, tensors={"w": torch.full((4,), float(version))}, meta={},
            rank_tensors={}, rank_meta={},
        )
        step += 1
    """
)


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_saves_killed_with_sigkill_after_random_delays(tmp_path):
    """A real process, killed with SIGKILL at random moments while it saves in a loop."""
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    priors = {"0": tiny_prior(seed=0).state_dict(), "1": tiny_prior(seed=1).state_dict()}
    buffers = {"0": filled_buffer(64, seed=0).state_dict(), "1": filled_buffer(64, seed=1)}
    buffers["1"] = buffers["1"].state_dict()
    rng = random.Random(12)
    for round_ in range(2):
        root = tmp_path / f"round{round_}"
        root.mkdir()
        tiny_prior(seed=0).save_pretrained(root / "prior")
        filled_buffer(64, seed=0).save(root / "buffer.safetensors")
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        worker = subprocess.Popen(
            [sys.executable, str(script), str(root)], stdout=subprocess.PIPE, env=env, cwd=REPO
        )
        try:
            assert worker.stdout.readline().strip() == b"ready"
            try:
                worker.wait(timeout=rng.uniform(0.05, 0.6))
            except subprocess.TimeoutExpired:
                pass
            assert worker.poll() is None, "the worker stopped on its own"
        finally:
            worker.send_signal(signal.SIGKILL)
            worker.wait()
        _prior_label(root / "prior", priors)
        _state_label(ActivationRingBuffer.load(root / "buffer.safetensors").state_dict(), buffers)
        latest = latest_checkpoint(root / "run")
        if latest is not None:
            load_checkpoint(latest)


# ------------------------------------------------------------------- command-line output paths
class _Loaded(Exception):
    """Raised by the patched loaders: the command got past its output checks."""


@pytest.fixture
def no_loading(monkeypatch):
    """Make every model or prior load raise _Loaded, so refusals must come before them."""

    def loaded(*args, **kwargs):
        raise _Loaded

    monkeypatch.setattr("tl_diffusion_prior.data.models.load_model", loaded)
    monkeypatch.setattr("tl_diffusion_prior.priors.load_prior", loaded)
    monkeypatch.setattr("tl_diffusion_prior.cli.demo.load_default_model", loaded)


def _run(*argv):
    args = build_parser().parse_args(list(argv))
    return args.func(args)


def _foreign_dir(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "notes.txt").write_text("mine")
    return path


def _train(out, *extra):
    return _run("train", "--out", str(out), "--device", "cpu", "--no-progress", *extra)


@pytest.mark.usefixtures("no_loading")
class TestTrainOut:
    def test_a_foreign_directory_is_refused_and_left_alone(self, tmp_path):
        out = _foreign_dir(tmp_path / "project")
        for extra in ([], ["--overwrite"]):
            with pytest.raises(ValueError, match="not one of this package's outputs"):
                _train(out, *extra)
        assert [p.name for p in out.iterdir()] == ["notes.txt"]

    def test_a_previous_prior_is_replaced_only_with_overwrite(self, tmp_path):
        out = tmp_path / "prior"
        tiny_prior().save_pretrained(out)
        (out / "loss.csv").write_text("step,loss\n")
        with pytest.raises(ValueError, match="--overwrite"):
            _train(out)
        with pytest.raises(_Loaded):
            _train(out, "--overwrite")
        # A prior folder with a file of the user's in it is not only ours.
        (out / "notes.txt").write_text("mine")
        with pytest.raises(ValueError, match="not one of this package's outputs"):
            _train(out, "--overwrite")

    def test_a_file_the_current_directory_and_an_unmakeable_parent_are_refused(
        self, tmp_path, monkeypatch
    ):
        file = tmp_path / "prior"
        file.write_text("not a directory")
        with pytest.raises(ValueError, match="is a file, but a directory"):
            _train(file, "--overwrite")
        assert file.read_text() == "not a directory"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["prior"]  # nothing moved aside
        with pytest.raises(ValueError, match="is a file, not a directory"):
            _train(file / "sub")
        monkeypatch.chdir(tmp_path)
        with pytest.raises(ValueError, match="current directory"):
            _train(".", "--overwrite")

    @pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes anywhere")
    def test_an_unwritable_parent_is_refused(self, tmp_path):
        parent = tmp_path / "locked"
        parent.mkdir()
        parent.chmod(0o500)
        try:
            with pytest.raises(ValueError, match="cannot write in"):
                _train(parent / "prior")
        finally:
            parent.chmod(0o700)

    def test_checkpoint_dir_checks(self, tmp_path):
        out = tmp_path / "prior"
        (tmp_path / "prior.checkpoints").write_text("a file")
        with pytest.raises(ValueError, match="--checkpoint-dir.*is a file"):
            _train(out)
        foreign = _foreign_dir(tmp_path / "ckpts")
        with pytest.raises(ValueError, match="--checkpoint-dir.*not one of this package"):
            _train(out, "--checkpoint-dir", str(foreign))
        with pytest.raises(ValueError, match="inside"):
            _train(out, "--checkpoint-dir", str(out / "checkpoints"))

    def test_resume_replaces_the_prior_of_the_run_it_resumes(self, tmp_path):
        out = tmp_path / "prior"
        tiny_prior().save_pretrained(out)
        # No checkpoint to resume: the prior at --out is not that run's, --overwrite is needed.
        with pytest.raises(ValueError, match="--overwrite"):
            _train(out, "--resume")
        save_checkpoint(
            tmp_path / "prior.checkpoints", 3, tensors={}, meta={}, rank_tensors={}, rank_meta={}
        )
        with pytest.raises(_Loaded):
            _train(out, "--resume")

    def test_resuming_another_hook_or_model_is_refused_before_anything_loads(self, tmp_path):
        out = tmp_path / "prior"
        saved = {"hook_name": "blocks.15.hook_resid_post", "model_name": "SmolLM2-135M-Instruct"}
        save_checkpoint(
            tmp_path / "prior.checkpoints",
            3,
            tensors={},
            meta={"prior_config": saved},
            rank_tensors={},
            rank_meta={},
        )
        with pytest.raises(ValueError, match="Hook mismatch.*blocks.15.*blocks.3"):
            _train(out, "--resume", "--hook", "blocks.3.hook_resid_post")
        with pytest.raises(ValueError, match="Model mismatch.*gpt2"):
            _train(out, "--resume", "--model", "gpt2")
        with pytest.raises(_Loaded):  # the checkpoint's own hook and model get as far as loading
            _train(out, "--resume", "--hook", "blocks.15.hook_resid_post")


@pytest.mark.usefixtures("no_loading")
def test_capture_out_checks(tmp_path, monkeypatch):
    def capture(out, *extra):
        return _run("capture", "--out", str(out), "--device", "cpu", *extra)

    with pytest.raises(ValueError, match="is a directory, but a file"):
        capture(tmp_path)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="is a directory, but a file"):
        capture(".", "--overwrite")
    notes = tmp_path / "notes.safetensors"
    notes.write_text("mine")
    with pytest.raises(ValueError, match="not one of this package's outputs"):
        capture(notes, "--overwrite")
    assert notes.read_text() == "mine"
    with pytest.raises(ValueError, match="is a file, not a directory"):
        capture(notes / "buffer.safetensors")
    buffer = tmp_path / "buffer.safetensors"
    filled_buffer(16).save(buffer)
    with pytest.raises(ValueError, match="--overwrite"):
        capture(buffer)
    with pytest.raises(_Loaded):
        capture(buffer, "--overwrite")
    with pytest.raises(_Loaded):
        capture(tmp_path / "new" / "buffer.safetensors")


@pytest.mark.usefixtures("no_loading")
def test_eval_and_demo_report_folder_checks(tmp_path):
    def eval_(out, *extra):
        return _run("eval", "--prior", str(tmp_path / "p"), "--out", str(out), *extra)

    def demo(out, *extra):
        return _run("demo", "--quick", "--out", str(out), *extra)

    for command in (eval_, demo):
        foreign = _foreign_dir(tmp_path / f"{command.__name__}-foreign")
        with pytest.raises(ValueError, match="not one of this package's outputs"):
            command(foreign, "--overwrite")
        file = tmp_path / f"{command.__name__}-file"
        file.write_text("mine")
        with pytest.raises(ValueError, match="is a file"):
            command(file, "--overwrite")
        report = tmp_path / f"{command.__name__}-report"
        (report / "plots").mkdir(parents=True)
        (report / "report.json").write_text("{}")
        with pytest.raises(ValueError, match="--overwrite"):
            command(report)
        with pytest.raises(_Loaded):
            command(report, "--overwrite")
        assert (report / "report.json").read_text() == "{}"  # put back when the run failed


# ----------------------------------------------------------------- the library's path helpers
def test_set_aside_keeps_the_previous_folder_until_the_new_one_is_complete(tmp_path):
    out = tmp_path / "report"
    out.mkdir()
    (out / "report.json").write_text("old")
    with pytest.raises(RuntimeError):
        with paths.set_aside(out):
            assert not out.exists() and paths.previous_sibling(out).is_dir()
            out.mkdir()
            (out / "partial").write_text("new")
            raise RuntimeError
    assert [p.name for p in tmp_path.iterdir()] == ["report"]
    assert (out / "report.json").read_text() == "old"
    with paths.set_aside(out):
        out.mkdir()
        (out / "report.json").write_text("new")
    assert [p.name for p in tmp_path.iterdir()] == ["report"]
    assert (out / "report.json").read_text() == "new"
    # A run killed meanwhile leaves the previous folder aside: reported, never deleted.
    paths.previous_sibling(out).mkdir()
    with pytest.raises(ValueError, match="did not finish"):
        paths.check_output_dir(out, overwrite=True, what="--out", is_ours=lambda p: True)


def test_check_output_dir_restores_a_replace_cut_between_its_renames(tmp_path):
    out = tmp_path / "prior"
    hidden = tmp_path / ".prior.old"
    hidden.mkdir()
    (hidden / "f").write_text("old")
    paths.check_output_dir(out, overwrite=True, what="--out", is_ours=lambda p: True)
    assert (out / "f").read_text() == "old" and not hidden.exists()
