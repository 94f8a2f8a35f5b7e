"""Concept-vs-fluency steering curves and their Pareto front.

Generation and scoring are passed in as callables, so this module depends on neither the steering
code nor a particular scorer: for each method and scale, ``generate(scale)`` returns the steered
continuations (in whatever form the scorers accept, e.g. ``(prompt, continuation)`` pairs), and
``concept_scorer`` / ``fluency_scorer`` map that list to one score per item (or one number). With
the project's own modules that is ``tl_diffusion_prior.steering.steer`` for generation and
``tl_diffusion_prior.evaluate.fluency`` for the concept score and the continuation NLL (lower is
more fluent: pass ``fluency_higher_is_better=False``). The NLL rewards repetition, so pass the
text judge's measures (``tl_diffusion_prior.evaluate.text_judge``: the fraction judged fluent,
held-out concept words) as ``extra_scorers``; each point then carries them with intervals too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from tl_diffusion_prior.evaluate.curves import pareto_front
from tl_diffusion_prior.evaluate.stats import ConfidenceInterval, bootstrap_ci

Generate = Callable[[float], Sequence[Any]]
Scorer = Callable[[Sequence[Any]], Sequence[float] | float]


@dataclass
class SteeringPoint:
    """Scores of one method at one steering scale (means with bootstrap intervals); ``extra``
    holds the ``extra_scorers``' scores by name."""

    method: str
    scale: float
    concept: ConfidenceInterval
    fluency: ConfidenceInterval
    n: int
    extra: dict[str, ConfidenceInterval] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "scale": self.scale,
            "concept": self.concept.to_dict(),
            "fluency": self.fluency.to_dict(),
            "n": self.n,
            "extra": {name: ci.to_dict() for name, ci in self.extra.items()},
        }

    @classmethod
    def from_dict(cls, data: dict) -> SteeringPoint:
        """The point :meth:`to_dict` wrote (e.g. read back from a results JSON)."""
        return cls(
            method=data["method"],
            scale=float(data["scale"]),
            concept=ConfidenceInterval(**data["concept"]),
            fluency=ConfidenceInterval(**data["fluency"]),
            n=int(data["n"]),
            extra={name: ConfidenceInterval(**ci) for name, ci in data["extra"].items()},
        )


@dataclass
class SteeringCurves:
    """Every (method, scale) point and the Pareto front over all of them.

    ``front`` lists indices into ``points``; ``front_by_method`` the same per method.
    """

    points: list[SteeringPoint]
    fluency_higher_is_better: bool
    front: list[int] = field(default_factory=list)
    front_by_method: dict[str, list[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.front and self.points:
            self.front = self._front(range(len(self.points)))
            methods = sorted({p.method for p in self.points})
            self.front_by_method = {
                m: self._front([i for i, p in enumerate(self.points) if p.method == m])
                for m in methods
            }

    def _front(self, indices) -> list[int]:
        indices = list(indices)
        pairs = [(self.points[i].concept.mean, self.points[i].fluency.mean) for i in indices]
        local = pareto_front(pairs, maximize=(True, self.fluency_higher_is_better))
        return [indices[j] for j in local]

    def to_dict(self) -> dict:
        return {
            "points": [p.to_dict() for p in self.points],
            "fluency_higher_is_better": self.fluency_higher_is_better,
            "front": self.front,
            "front_methods": [self.points[i].method for i in self.front],
            "front_by_method": self.front_by_method,
        }


def _scores(scorer: Scorer, items: Sequence[Any], what: str) -> torch.Tensor:
    raw = scorer(items)
    values = torch.as_tensor(raw, dtype=torch.float64).flatten()
    if values.numel() not in (1, len(items)):
        raise ValueError(
            f"{what} returned {values.numel()} scores for {len(items)} generations; return one "
            "score per generation or a single number."
        )
    return values


def steering_curves(
    generators: Mapping[str, Generate],
    scales: Sequence[float],
    concept_scorer: Scorer,
    fluency_scorer: Scorer,
    fluency_higher_is_better: bool = False,
    n_resamples: int = 1000,
    seed: int = 0,
    extra_scorers: Mapping[str, Scorer] | None = None,
) -> SteeringCurves:
    """Score every method's steered generations at every scale.

    Args:
        generators: Method name -> ``generate(scale)``; include plain (un-projected) steering,
            e.g. difference-of-means addition, as the reference.
        scales: Steering scales (e.g. multiples of the mean activation norm).
        concept_scorer: Generations -> concept scores (higher is more on-concept).
        fluency_scorer: Generations -> fluency scores (e.g. continuation NLL).
        fluency_higher_is_better: False for NLL-like scores.
        extra_scorers: Name -> scorer of further measures (e.g. the fraction judged fluent),
            reported per point in ``SteeringPoint.extra``; the Pareto front ignores them.
    """
    if not generators:
        raise ValueError("generators is empty; pass at least one method.")
    points = []
    for method, generate in generators.items():
        for scale in scales:
            items = list(generate(float(scale)))
            if not items:
                raise ValueError(f"generate({scale}) for {method!r} returned no generations.")
            concept = _scores(concept_scorer, items, "concept_scorer")
            fluency = _scores(fluency_scorer, items, "fluency_scorer")
            extra = {
                name: bootstrap_ci(
                    _scores(scorer, items, f"extra_scorers[{name!r}]"),
                    n_resamples=n_resamples,
                    seed=seed,
                )
                for name, scorer in (extra_scorers or {}).items()
            }
            points.append(
                SteeringPoint(
                    method=method,
                    scale=float(scale),
                    concept=bootstrap_ci(concept, n_resamples=n_resamples, seed=seed),
                    fluency=bootstrap_ci(fluency, n_resamples=n_resamples, seed=seed),
                    n=len(items),
                    extra=extra,
                )
            )
    return SteeringCurves(points, fluency_higher_is_better)
