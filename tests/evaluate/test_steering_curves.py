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
