import json

from tests.evaluate.report.helpers import HOOK
from tl_diffusion_prior.core.serialization import load_safetensors
from tl_diffusion_prior.evaluate.report import write_report
from tl_diffusion_prior.evaluate.report.markdown import _target_lines

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_write_report_outputs(tiny_run):
    report, tmp_path = tiny_run
    written = write_report(report, tmp_path / "report")
    data = json.loads(written["json"].read_text())
    assert data["settings"]["pca_ks"] == [4, 16, 999]
    assert data["hook_name"] == HOOK
    assert len(data["results"]) == len(report.results)
    assert data["results"][0]["delta_lm"]["n"] >= 1
    assert data["steering"]["points"][0]["method"] == "plain"
    vectors = load_safetensors(written["steer_vectors"])
    assert list(vectors) == ["ood-minus-heldout"] and vectors["ood-minus-heldout"].shape == (64,)
    markdown = written["markdown"].read_text()
    for heading in (
        "## Benchmark targets",
        "## Delta LM on `heldout`",
        "## Frechet distance",
        "## Best setting per method",
        "(c) normalised FD / floor",
        "## What this run can resolve",
        "## Delta LM per source of `heldout`",
        "(a') restoration, held-out, the paper's round trip",
        "(a) restoration on `pydoc`: best prior / noise left alone",
    ):
        assert heading in markdown
    assert data["resolution"]["heldout"]["reconstruct"]["n_pairs"] >= 1
    assert set(data["results"][0]["per_group"]) == {"one", "two"}
    pngs = sorted(p.name for p in (tmp_path / "report" / "plots").iterdir())
    assert pngs == sorted(
        [
            "loss_curves.png",
            "delta_lm_heldout.png",
            "delta_lm_pydoc.png",
            "distortion_heldout.png",
            "distortion_pydoc.png",
            "distortion_normalized_heldout.png",
            "distortion_normalized_pydoc.png",
            "steering_pareto.png",
            "pca_scatter.png",
        ]
    )
    for name in pngs:
        assert (tmp_path / "report" / "plots" / name).read_bytes()[:8] == PNG_MAGIC
    # Atomic writes leave no temporary files behind.
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == [
        "plots",
        "report.json",
        "report.md",
        "steer_vectors.safetensors",
    ]


def test_target_lines_show_a_ratios_interval_when_it_has_one():
    entry = {
        "ratio": 0.3335,
        "ratio_ci": {"low": 0.3121, "high": 0.3572, "level": 0.95, "n": 240},
        "target": 0.26,
        "met": False,
        "numerator": {"label": "prior", "delta_lm": 0.2078, "ci": [0.1928, 0.2218]},
        "denominator": {"label": "SAE", "delta_lm": 0.6230, "ci": [0.5943, 0.6519]},
    }
    with_ci = _target_lines({"a_restoration_heldout": entry})[0]
    assert ": 0.334 [0.312, 0.357] (target <= 0.26: **NOT met**) = prior 0.2078" in with_ci
    without = _target_lines({"a_restoration_heldout": {**entry, "ratio_ci": None}})[0]
    assert ": 0.334 (target <= 0.26" in without
    old_report = {k: v for k, v in entry.items() if k != "ratio_ci"}
    assert _target_lines({"a_restoration_heldout": old_report})[0] == without
