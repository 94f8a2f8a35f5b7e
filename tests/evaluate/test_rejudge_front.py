"""Re-judging a finished steering run from its stored texts (``benchmarks/steer_front.py
--rejudge``): the fluent fractions follow the current judge, and nothing else changes."""

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "steer_front.py"
RUN = ROOT / "benchmarks" / "results" / "steer_front_generated_v2"


@pytest.fixture(scope="module")
def steer_front():
    spec = importlib.util.spec_from_file_location("steer_front", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def run(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    for name in ("results.json", "items.jsonl"):
        shutil.copy(RUN / name, out / name)
    return out


def _point(results: dict, method: str, scale: float) -> dict:
    return next(
        p for p in results["curves"]["points"] if p["method"] == method and p["scale"] == scale
    )


def test_rejudging_a_rejudged_run_changes_nothing_but_the_date(steer_front, run):
    before = json.loads((run / "results.json").read_text())
    steer_front.rejudge(run)
    after = json.loads((run / "results.json").read_text())
    assert after["curves"] == before["curves"] and after["items"] == before["items"]
    assert (run / "report.md").exists() and (run / "front.png").exists()


def test_a_text_above_the_nll_cap_is_no_longer_fluent(steer_front, run):
    results = json.loads((run / "results.json").read_text())
    key, method, scale = "plain steering|0.6", "plain steering", 0.6
    fluent = [i for i in results["items"][key] if i["fluent"]]
    fluent[0]["nll"] = 4.5  # above the judge's cap of 4 nats
    (run / "results.json").write_text(json.dumps(results))
    before = _point(results, method, scale)["extra"]["fluent"]["mean"]

    steer_front.rejudge(run)

    after = json.loads((run / "results.json").read_text())
    items = after["items"][key]
    assert after["judged"]["max_fluent_nll"] == 4.0
    assert _point(after, method, scale)["extra"]["fluent"]["mean"] == pytest.approx(
        before - 1 / len(items)
    )
    lines = [json.loads(line) for line in (run / "items.jsonl").read_text().splitlines()]
    changed = [x for x in lines if x["method"] == method and x["scale"] == scale]
    assert sum(not x["fluent"] for x in changed) == sum(not i["fluent"] for i in items)
    assert len(lines) == sum(len(v) for v in after["items"].values())
