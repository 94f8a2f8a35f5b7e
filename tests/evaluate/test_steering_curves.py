import pytest

from tl_diffusion_prior.evaluate.steering_curves import steering_curves


def _generator(method_strength: float):
    # Each "generation" is a (concept, nll) pair; steering harder raises both.
    def generate(scale: float):
        return [
            (method_strength * scale + 0.01 * i, 2.0 + scale**2 / method_strength + 0.01 * i)
            for i in range(5)
        ]

    return generate


def test_points_scores_and_front():
    curves = steering_curves(
        {"plain": _generator(1.0), "prior": _generator(2.0)},
        scales=[0.5, 1.0],
        concept_scorer=lambda items: [c for c, _ in items],
        fluency_scorer=lambda items: [n for _, n in items],
        fluency_higher_is_better=False,
        n_resamples=100,
    )
    assert len(curves.points) == 4
    by_key = {(p.method, p.scale): p for p in curves.points}
    assert by_key[("prior", 1.0)].concept.mean == pytest.approx(2.02)
    assert by_key[("plain", 0.5)].fluency.mean == pytest.approx(2.27)
    # The stronger method dominates: it alone makes up the overall front.
    assert {curves.points[i].method for i in curves.front} == {"prior"}
    assert set(curves.front_by_method) == {"plain", "prior"}
    assert len(curves.front_by_method["plain"]) == 2
    data = curves.to_dict()
    assert data["front_methods"] == ["prior", "prior"]


def test_scorer_may_return_one_number_but_not_a_wrong_count():
    curves = steering_curves(
        {"m": lambda s: ["a", "b"]},
        [1.0],
        lambda items: 0.5,
        lambda items: [1.0, 2.0],
        n_resamples=10,
    )
    assert curves.points[0].concept.mean == 0.5
    with pytest.raises(ValueError, match="one score per generation"):
        steering_curves(
            {"m": lambda s: ["a", "b"]}, [1.0], lambda items: [1.0, 2.0, 3.0], lambda items: 1.0
        )
    with pytest.raises(ValueError, match="no generations"):
        steering_curves({"m": lambda s: []}, [1.0], lambda items: 1.0, lambda items: 1.0)


def test_extra_scorers_are_reported_per_point_and_leave_the_front_alone():
    common = dict(
        generators={"plain": _generator(1.0), "prior": _generator(2.0)},
        scales=[0.5, 1.0],
        concept_scorer=lambda items: [c for c, _ in items],
        fluency_scorer=lambda items: [n for _, n in items],
        n_resamples=50,
    )
    curves = steering_curves(
        **common, extra_scorers={"fluent": lambda items: [float(n < 2.265) for _, n in items]}
    )
    by_key = {(p.method, p.scale): p for p in curves.points}
    assert by_key[("plain", 0.5)].extra["fluent"].mean == pytest.approx(
        0.4
    )  # 2.25, 2.26 of 2.25..2.29
    assert by_key[("plain", 1.0)].extra["fluent"].mean == 0.0
    assert curves.to_dict()["points"][0]["extra"]["fluent"]["mean"] == pytest.approx(0.4)
    assert curves.front == steering_curves(**common).front
    with pytest.raises(ValueError, match=r"extra_scorers\['bad'\]"):
        steering_curves(**common, extra_scorers={"bad": lambda items: [1.0, 2.0]})
