"""save_pretrained writes a model card (README.md) beside a prior's weights, from its files."""

from __future__ import annotations

from tl_diffusion_prior.cli.common import is_prior_dir
from tl_diffusion_prior.constants import MODEL_CARD_NAME
from tl_diffusion_prior.core.model_card import build_model_card
from tl_diffusion_prior.evaluate.baselines.gaussian import GaussianBaseline, GaussianBaselineConfig
from tl_diffusion_prior.priors import MLPPrior, MLPPriorConfig, load_prior


def _prior(**fields) -> MLPPrior:
    config = MLPPriorConfig(
        d_model=8,
        hook_name="blocks.3.hook_resid_post",
        model_name="HuggingFaceTB/SmolLM2-135M",
        depth=1,
        d_hidden=8,
        d_mlp=8,
        time_embed_dim=8,
        **fields,
    )
    return MLPPrior(config)


def test_a_saved_prior_has_a_card_with_its_provenance(tmp_path):
    prior = _prior()
    prior.record_training({"steps": 1234, "command": "tl-diffusion-prior train --steps 1234"})
    prior.save_pretrained(tmp_path / "p")
    card = (tmp_path / "p" / MODEL_CARD_NAME).read_text()
    assert card.startswith("---\nlibrary_name: tl-diffusion-prior\n")
    assert "base_model: HuggingFaceTB/SmolLM2-135M" in card
    assert (
        "# mlp diffusion prior for `blocks.3.hook_resid_post` of HuggingFaceTB/SmolLM2-135M" in card
    )
    assert f"| Parameters | {prior.num_parameters:,} |" in card
    assert "| steps | 1234 |" in card
    assert "| command | tl-diffusion-prior train --steps 1234 |" in card
    assert "No file is a pickle." in card and '"depth": 1' in card
    # The card is informational: the folder still counts as a prior and loads.
    assert is_prior_dir(tmp_path / "p")
    assert type(load_prior(tmp_path / "p")) is MLPPrior


def test_card_without_a_training_record_says_so():
    card = build_model_card(_prior().config.to_dict(), "architecture", {}, 10)
    assert "No training record was saved with this prior." in card
    # A model name that is not a hub id gets no base_model link.
    config = {**_prior().config.to_dict(), "model_name": "SmolLM2-135M-Instruct"}
    assert "base_model" not in build_model_card(config, "architecture", {}, 10)


def test_long_record_values_are_cut_and_pipes_escaped():
    record = {"notes": "a|b " + "x" * 1000}
    card = build_model_card(_prior().config.to_dict(), "architecture", record, 10)
    (line,) = [row for row in card.splitlines() if row.startswith("| notes |")]
    assert "a\\|b" in line and line.endswith("... |") and len(line) < 340


def test_baselines_get_no_card(tmp_path):
    baseline = GaussianBaseline(GaussianBaselineConfig(d_model=4))
    assert baseline.model_card() is None
    baseline.save_pretrained(tmp_path / "g")
    assert (tmp_path / "g" / "config.json").is_file()
    assert not (tmp_path / "g" / MODEL_CARD_NAME).exists()
