import pytest

from tl_diffusion_prior.evaluate.concept_steering import PLAIN, ConceptItem
from tl_diffusion_prior.evaluate.concepts import DEFAULT_CONCEPTS
from tl_diffusion_prior.evaluate.scale_calibration import (
    ScaleCalibration,
    _point,
    calibrate_scale,
)

HOOK = "blocks.15.hook_resid_post"


def items(lifts, fluent):
    return [
        ConceptItem(text="t", lift=lift, nll=2.0, fluent=f, distinct_2=1.0, lexicon_hits=0)
        for lift, f in zip(lifts, fluent, strict=True)
    ]


def test_a_scale_is_usable_only_when_the_concept_moves_and_the_text_stays_fluent():
    moved, still = [0.8, 1.0, 1.2, 0.9], [0.1, -0.2, 0.3, -0.1]
    fluent, broken = [True, True, True, True], [True, False, False, False]
    assert _point(0.25, items(moved, fluent), 1.0, 0.2, 200, 0).usable
    assert not _point(0.25, items(still, fluent), 1.0, 0.2, 200, 0).usable  # lift CI spans 0
    assert not _point(1.0, items(moved, broken), 1.0, 0.2, 200, 0).usable  # 25% fluent < 80%
    # The tolerance is relative to the unsteered text: if only half of it was fluent, a scale
    # that keeps 50% fluent is as good as unsteered.
    half = [True, True, False, False]
    assert _point(0.5, items(moved, half), 0.5, 0.2, 200, 0).usable


def test_result_reports_range_table_and_plot(tmp_path):
    points = [
        _point(0.1, items([0.0, 0.1, -0.1], [True] * 3), 1.0, 0.2, 200, 0),
        _point(0.25, items([0.9, 1.1, 1.0], [True] * 3), 1.0, 0.2, 200, 0),
        _point(0.5, items([1.5, 1.7, 1.6], [True, True, True]), 1.0, 0.2, 200, 0),
        _point(1.0, items([2.0, 2.5, 2.2], [False] * 3), 1.0, 0.2, 200, 0),
    ]
    result = ScaleCalibration(PLAIN, points, 1.0, 0.2, texts={})
    assert result.usable_scales == [0.25, 0.5]
    assert result.usable_range == (0.25, 0.5)
    table = result.table()
    assert table.count("| yes |") == 2 and "| 1 |" in table
    result.plot(tmp_path / "calibration.png")
    assert (tmp_path / "calibration.png").stat().st_size > 1000
    assert ScaleCalibration(PLAIN, points[:1], 1.0, 0.2, texts={}).usable_range is None


def test_bad_arguments_fail_before_generating(tiny_model):
    common = dict(
        model=tiny_model,
        hook_name="blocks.1.hook_resid_post",
        concept=DEFAULT_CONCEPTS[0],
        prompts=["a"],
        reference_norm=1.0,
    )
    with pytest.raises(ValueError, match="each > 0"):
        calibrate_scale(**common, scales=(0.0, 0.5))
    with pytest.raises(ValueError, match="tolerance must be in"):
        calibrate_scale(**common, tolerance=1.0)
    with pytest.raises(ValueError, match="reference_norm must be > 0"):
        calibrate_scale(**{**common, "reference_norm": 0.0})


@pytest.mark.slow
def test_calibration_on_the_default_model(default_model):
    prompts = ["Tell me about your weekend.", "The town is", "What's your name?"]
    result = calibrate_scale(
        default_model,
        HOOK,
        DEFAULT_CONCEPTS[0],
        prompts,
        reference_norm=170.0,
        scales=(0.6,),
        max_new_tokens=8,
        n_resamples=50,
    )
    assert result.method == PLAIN
    assert set(result.texts) == {0.0, 0.6} and len(result.texts[0.0]) == len(prompts)
    assert 0.0 <= result.unsteered_fluent <= 1.0
    # Steering towards joy at r = 0.6 makes joyful words more likely than unsteered.
    assert result.points[0].concept_lift.mean > 0.3
