"""Comparing methods along their knobs: interpolation at equal distortion, and Pareto fronts.

A method's curve is its ``(distortion, delta LM)`` points over its own knob (PCA over ``k``, the
SAE over sizes, the Gaussian posterior and each prior over ``t``). Two methods are compared fairly
at the same distortion: each curve is sorted by distortion and linearly interpolated there;
outside a curve's range there is no value (None), never an extrapolation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

Point = tuple[float, float]


def _clean(points: Sequence[Point]) -> list[Point]:
    cleaned = []
    for point in points:
        if len(point) != 2:
            raise ValueError(f"Each point must be (distortion, value), got {point!r}.")
        x, y = float(point[0]), float(point[1])
        if math.isfinite(x) and math.isfinite(y):
            cleaned.append((x, y))
    return sorted(cleaned)


def interpolate_at(points: Sequence[Point], distortion: float) -> float | None:
    """The curve's value at ``distortion`` by linear interpolation; None outside its range.

    Points are sorted by distortion; points with equal distortion are averaged.
    """
    by_distortion: dict[float, list[float]] = {}
    for x, y in _clean(points):
        by_distortion.setdefault(x, []).append(y)
    if not by_distortion:
        return None
    merged = [(x, sum(ys) / len(ys)) for x, ys in sorted(by_distortion.items())]
    if distortion < merged[0][0] or distortion > merged[-1][0]:
        return None
    for (x0, y0), (x1, y1) in zip(merged, merged[1:], strict=False):
        if x0 <= distortion <= x1:
            if x1 == x0:
                return y0
            return y0 + (y1 - y0) * (distortion - x0) / (x1 - x0)
    return merged[0][1]


def overlap_range(curves: Mapping[str, Sequence[Point]]) -> tuple[float, float] | None:
    """The distortion interval every curve covers, or None if they do not overlap."""
    ranges = []
    for points in curves.values():
        pts = _clean(points)
        if not pts:
            return None
        ranges.append((pts[0][0], pts[-1][0]))
    if not ranges:
        return None
    low, high = max(r[0] for r in ranges), min(r[1] for r in ranges)
    return (low, high) if low <= high else None


def compare_at_distortions(
    curves: Mapping[str, Sequence[Point]], distortions: Sequence[float]
) -> dict[float, dict[str, float | None]]:
    """Every curve's interpolated value at each distortion (None where a curve has no value)."""
    return {
        float(d): {name: interpolate_at(points, float(d)) for name, points in curves.items()}
        for d in distortions
    }


def compare_curves(
    candidate: Sequence[Point], reference: Sequence[Point], n_grid: int = 25
) -> dict:
    """Whether ``candidate`` lies below ``reference`` where both are defined.

    Returns ``{"range": [lo, hi] or None, "n_compared", "fraction_below", "mean_ratio",
    "points": [[distortion, candidate, reference], ...]}`` on an even grid of the overlap.
    """
    overlap = overlap_range({"candidate": candidate, "reference": reference})
    if overlap is None or n_grid < 1:
        return {
            "range": None,
            "n_compared": 0,
            "fraction_below": None,
            "mean_ratio": None,
            "points": [],
        }
    low, high = overlap
    # Clamped so that round-off never pushes a grid point just outside a curve's range.
    grid = [min(high, low + (high - low) * i / max(n_grid - 1, 1)) for i in range(n_grid)]
    if low == high:
        grid = [low]
    rows = []
    for d in grid:
        a, b = interpolate_at(candidate, d), interpolate_at(reference, d)
        if a is not None and b is not None:
            rows.append([d, a, b])
    below = [a < b for _, a, b in rows]
    ratios = [a / b for _, a, b in rows if b > 0]
    return {
        "range": [low, high],
        "n_compared": len(rows),
        "fraction_below": sum(below) / len(rows) if rows else None,
        "mean_ratio": sum(ratios) / len(ratios) if ratios else None,
        "points": rows,
    }


def pareto_front(
    points: Sequence[tuple[float, float]], maximize: tuple[bool, bool] = (True, True)
) -> list[int]:
    """Indices of the non-dominated points, sorted by the first coordinate.

    A point dominates another when it is at least as good in both coordinates and better in one;
    ``maximize`` says, per coordinate, whether larger is better (e.g. ``(True, False)`` for concept
    score vs continuation NLL).
    """
    signs = [1.0 if m else -1.0 for m in maximize]
    oriented = [(signs[0] * float(p[0]), signs[1] * float(p[1])) for p in points]
    front = []
    for i, (a0, a1) in enumerate(oriented):
        if not (math.isfinite(a0) and math.isfinite(a1)):
            continue
        dominated = any(
            (b0 >= a0 and b1 >= a1 and (b0 > a0 or b1 > a1))
            for j, (b0, b1) in enumerate(oriented)
            if j != i and math.isfinite(b0) and math.isfinite(b1)
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: float(points[i][0]))
