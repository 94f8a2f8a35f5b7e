import pytest

from tl_diffusion_prior.evaluate.front_comparison import (
    calibrated_scale,
    concept_retention,
    matched_comparisons,
)
from tl_diffusion_prior.evaluate.stats import ConfidenceInterval
from tl_diffusion_prior.evaluate.steering_curves import SteeringPoint


def _ci(mean, half=0.05):
    return ConfidenceInterval(mean, mean - half, mean + half, 100, 0.95)


def _point(method, scale, concept, fluent, concept_half=0.1):
    return SteeringPoint(
        method, scale, _ci(concept, concept_half), _ci(2.0), 100, extra={"fluent": _ci(fluent)}
    )


# Plain: concept rises 0 -> 2 -> 4 while fluency falls 0.9 -> 0.7 -> 0.2.
PLAIN = [
    _point("plain", 0.0, 0.0, 0.9),
    _point("plain", 0.5, 2.0, 0.7),
    _point("plain", 1.0, 4.0, 0.2),
]


def test_matched_comparison_interpolates_the_reference_at_the_methods_concept():
    # At concept 3 the plain curve is halfway between 0.7 and 0.2: 0.45 (bounds 0.40-0.50).
    points = PLAIN + [_point("prior", 1.0, 3.0, 0.8), _point("prior", 0.5, 1.0, 0.8)]
    found = {c.scale: c for c in matched_comparisons(points, "prior", "plain")}
    assert found[1.0].reference == pytest.approx((0.45, 0.40, 0.50))
    assert found[1.0].verdict == "better"
    assert found[0.5].reference == pytest.approx((0.8, 0.75, 0.85))  # halfway 0.9 -> 0.7
    assert found[0.5].verdict == "overlap"


def test_the_reference_is_interpolated_along_its_pareto_front_not_in_scale_order():
    # At r = 1.5 the text is broken: lower concept score than r = 1 and far less fluent. It is
    # dominated, so a method at concept 1 is compared with 0.8 (halfway 0.9 -> 0.7), not with a
    # line to the broken point.
    broken = _point("plain", 1.5, 1.5, 0.05)
    points = PLAIN + [broken, _point("prior", 0.5, 1.0, 0.6)]
    (found,) = matched_comparisons(points, "prior", "plain")
    assert found.reference == pytest.approx((0.8, 0.75, 0.85))
    assert found.verdict == "worse"


def test_matched_comparison_worse_and_outside_the_reference_range():
    points = PLAIN + [_point("sae", 0.5, 2.0, 0.3), _point("sae", 1.0, 5.0, 0.9)]
    found = matched_comparisons(points, "sae", "plain")
    assert [(c.scale, c.verdict) for c in found] == [(0.5, "worse")]  # concept 5 is out of range


def test_lower_is_better_flips_the_verdict():
    # An NLL-like score (lower is better) that worsens as the concept rises: 1 -> 2 -> 5.
    nll = [_point("plain", 0.0, 0.0, 1.0), _point("plain", 0.5, 2.0, 2.0)]
    nll += [_point("plain", 1.0, 4.0, 5.0), _point("prior", 1.0, 3.0, 2.5)]
    (found,) = matched_comparisons(nll, "prior", "plain", higher_is_better=False)
    assert found.reference == pytest.approx((3.5, 3.45, 3.55))
    assert found.verdict == "better"


def test_retention_and_calibrated_scale():
    points = PLAIN + [_point("prior", 0.5, 1.0, 0.8), _point("prior", 1.0, 3.0, 0.8)]
    assert concept_retention(points, "prior", "plain") == pytest.approx({0.5: 0.5, 1.0: 0.75})
    # Within 20% of 0.9 means fluent >= 0.72: plain's r = 0.5 (0.70) fails, prior's r = 1.0 passes.
    assert calibrated_scale(points, "plain", unsteered_fluency=0.9) is None
    assert calibrated_scale(points, "prior", unsteered_fluency=0.9).scale == 1.0
    assert calibrated_scale(points, "plain", unsteered_fluency=0.9, tolerance=0.25).scale == 0.5


def test_errors_name_what_there_is():
    with pytest.raises(ValueError, match="'plain'"):
        matched_comparisons(PLAIN, "prior", "plain")
    with pytest.raises(KeyError, match="no score 'x'"):
        matched_comparisons(PLAIN + [_point("p", 0.5, 1.0, 0.8)], "p", "plain", fluency="x")


def test_points_round_trip_through_dicts():
    point = PLAIN[1]
    assert SteeringPoint.from_dict(point.to_dict()) == point
