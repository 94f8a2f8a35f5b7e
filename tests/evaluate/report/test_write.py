import json

from tests.evaluate.report.helpers import HOOK
from tl_diffusion_prior.core.serialization import load_safetensors
from tl_diffusion_prior.evaluate.report import write_report

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
