"""Reading a concept-vs-fluency sweep: one method against another at matched concept score.

Comparing two steering methods at the same *scale* is unfair when one of them erases part of the
edit (a projection back onto the manifold keeps the text fluent partly by keeping less of the
concept). The fair question is: at the concept score a method reaches, is its text more fluent
than the reference's at that same concept score? :func:`matched_comparisons` answers it by
interpolating the reference's Pareto front (its points that no other of its points beats in both
concept and fluency, ordered by concept score, linearly between neighbours, the interval bounds
too) at each of the method's points inside the front's range. The front, not the curve in scale
order: the concept score need not rise with the scale (broken text at a large scale can score
lower than fluent text at a moderate one), and a dominated reference point is not what the
reference can do at that concept score. A point is ``"better"`` when the method's fluency
interval lies wholly above the reference's interpolated one, ``"worse"`` when wholly below, else
``"overlap"``.

:func:`concept_retention` gives the other half of the objection: the fraction of the reference's
concept shift a method keeps at the same scale. :func:`calibrated_scale` finds, for one method,
the largest scale whose concept interval excludes the unsteered score while its fluency stays
within a tolerance of the unsteered text.

Points are :class:`~tl_diffusion_prior.evaluate.steering_curves.SteeringPoint` objects; a measure
is ``"concept"`` / ``"fluency"`` (the point's own) or the name of one of its ``extra`` scores
(e.g. ``"fluent"``, ``"lexicon_hits"``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tl_diffusion_prior.evaluate.curves import pareto_front
from tl_diffusion_prior.evaluate.stats import ConfidenceInterval
from tl_diffusion_prior.evaluate.steering_curves import SteeringPoint

VERDICTS = ("better", "worse", "overlap")


def measure(point: SteeringPoint, name: str) -> ConfidenceInterval:
    """The point's score called ``name`` (see the module docstring)."""
    if name in ("concept", "fluency"):
        return getattr(point, name)
    if name not in point.extra:
        raise KeyError(
            f"The point ({point.method}, r={point.scale:g}) has no score {name!r}; it has "
            f"'concept', 'fluency' and {sorted(point.extra)}."
        )
    return point.extra[name]


def points_of(points: Sequence[SteeringPoint], method: str) -> list[SteeringPoint]:
    """``method``'s points in scale order, or a clear error naming the methods there are."""
    found = sorted((p for p in points if p.method == method), key=lambda p: p.scale)
    if not found:
        raise ValueError(
            f"No points of {method!r}; the methods are {sorted({p.method for p in points})}."
        )
    return found


@dataclass(frozen=True)
class MatchedComparison:
    """One point of a method against the reference interpolated at its concept score.

    Attributes:
        scale: The method's scale at this point.
        concept: The method's concept score (mean).
        fluency: The method's fluency interval.
        reference: The reference's fluency interpolated at ``concept`` (mean, low, high).
        verdict: ``"better"``, ``"worse"`` or ``"overlap"`` (see the module docstring; "better"
            follows ``higher_is_better``).
    """

    scale: float
    concept: float
    fluency: ConfidenceInterval
    reference: tuple[float, float, float]
    verdict: str


def matched_comparisons(
    points: Sequence[SteeringPoint],
    method: str,
    reference: str,
    concept: str = "concept",
    fluency: str = "fluent",
    higher_is_better: bool = True,
) -> list[MatchedComparison]:
    """``method``'s points inside the reference's concept range, each against the reference's
    fluency interpolated at the same concept score (see the module docstring)."""
    own_points = points_of(points, reference)
    pairs = [(measure(p, concept).mean, measure(p, fluency).mean) for p in own_points]
    curve = [own_points[i] for i in pareto_front(pairs, maximize=(True, higher_is_better))]
    xs = [measure(p, concept).mean for p in curve]
    result = []
    for point in points_of(points, method):
        x = measure(point, concept).mean
        if not xs[0] <= x <= xs[-1]:
            continue
        ref = tuple(_interpolate(xs, [_bounds(measure(p, fluency))[k] for p in curve], x)
                    for k in range(3))  # fmt: skip
        own = measure(point, fluency)
        above, below = own.low > ref[2], own.high < ref[1]
        if not higher_is_better:
            above, below = below, above
        verdict = "better" if above else "worse" if below else "overlap"
        result.append(MatchedComparison(point.scale, x, own, ref, verdict))
    return result


def concept_retention(
    points: Sequence[SteeringPoint], method: str, reference: str, concept: str = "concept"
) -> dict[float, float]:
    """Scale -> ``method``'s concept score over the reference's at that scale, for the scales
    where the reference's score is above zero (the unsteered score is zero for a lift)."""
    ref = {p.scale: measure(p, concept).mean for p in points_of(points, reference)}
    return {
        p.scale: measure(p, concept).mean / ref[p.scale]
        for p in points_of(points, method)
        if ref.get(p.scale, 0.0) > 0
    }


def calibrated_scale(
    points: Sequence[SteeringPoint],
    method: str,
    unsteered_fluency: float,
    tolerance: float = 0.2,
    concept: str = "concept",
    fluency: str = "fluent",
) -> SteeringPoint | None:
    """The largest-scale point of ``method`` whose concept interval lies above zero (the
    unsteered lift) and whose mean fluency is at least ``(1 - tolerance) * unsteered_fluency``
    (a higher-is-better fluency such as the fraction judged fluent); None if no scale qualifies.
    """
    usable = [
        p
        for p in points_of(points, method)
        if measure(p, concept).low > 0
        and measure(p, fluency).mean >= (1 - tolerance) * unsteered_fluency
    ]
    return usable[-1] if usable else None


def _bounds(ci: ConfidenceInterval) -> tuple[float, float, float]:
    return ci.mean, ci.low, ci.high


def _interpolate(xs: Sequence[float], ys: Sequence[float], x: float) -> float:
    """Piecewise-linear ``y(x)`` through sorted ``xs`` (ties averaged: two points with one concept
    score give their mean)."""
    for i in range(len(xs) - 1):
        if xs[i] <= x <= xs[i + 1]:
            if xs[i + 1] == xs[i]:
                return (ys[i] + ys[i + 1]) / 2
            w = (x - xs[i]) / (xs[i + 1] - xs[i])
            return ys[i] + w * (ys[i + 1] - ys[i])
    return ys[0]
