"""Concept-vs-fluency steering curves on a real model: plain steering against steering + prior.

For each concept (contrast prompts plus the words that signal it) the steering vector is the
difference of means at the hook (:func:`~tl_diffusion_prior.steering.vector.steering_vector`).
Every method generates greedy continuations of the same prompts at every relative scale ``r``
(the hook adds ``r * reference norm`` along the vector's unit direction, the same for every method;
the raw vector's own norm plays no part), and each continuation gets two scores from one pass of
the unsteered model (:mod:`~tl_diffusion_prior.evaluate.fluency`):

* **concept lift**: the continuation's concept log-probability (log of the probability mass the
  unsteered model puts on the concept's words after each continuation token) minus that of the
  unsteered continuation of the same prompt. 0 means no movement towards the concept; higher is
  more on-concept. Subtracting the unsteered value makes concepts with rare and common words
  comparable, so points average over concepts and prompts.
* **fluency**: the continuation's NLL under the unsteered model (lower is more fluent).

The NLL rewards repetition (a looping text is easy to predict), and the lift comes from a model's
log-probabilities of the concept's own words, so each point also carries, in ``extra``, what the
text judge (:mod:`~tl_diffusion_prior.evaluate.text_judge`) reads from the decoded text:
``"fluent"`` (fraction judged fluent: no loops, repeated phrases or junk, and NLL at most
``MAX_FLUENT_NLL``), ``"distinct_2"``, and ``"lexicon_hits"`` (words of the concept's held-out
lexicon, :mod:`~tl_diffusion_prior.evaluate.concept_lexicons`, in the text).

Points and their Pareto front come from :func:`~tl_diffusion_prior.evaluate.steering_curves.
steering_curves`, with bootstrap intervals over the (concept, prompt) items.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from transformer_lens.utilities import get_attention_mask

from tl_diffusion_prior.core.lens import LensModel
from tl_diffusion_prior.evaluate.concepts import DEFAULT_CONCEPTS, DEFAULT_PROMPTS, SteeringConcept
from tl_diffusion_prior.evaluate.fluency import (
    concept_token_ids,
    mask_after_eos,
    score_continuations,
)
from tl_diffusion_prior.evaluate.steering_curves import SteeringCurves, steering_curves
from tl_diffusion_prior.evaluate.text_judge import judge_fluency, lexicon_hits
from tl_diffusion_prior.priors.base import DiffusionPrior
from tl_diffusion_prior.steering.config import DEFAULT_NUM_STEPS, DEFAULT_T_START, steering_config
from tl_diffusion_prior.steering.steer import Projection, steer
from tl_diffusion_prior.steering.vector import steering_vector

PLAIN = "plain steering"


def concept_steering_curves(
    model: LensModel,
    hook_name: str,
    priors: Mapping[str, Any],  # DiffusionPrior | Projection; checked with clearer errors
    scales: Sequence[float],
    reference_norm: float,
    concepts: Sequence[SteeringConcept] = DEFAULT_CONCEPTS,
    prompts: Sequence[str] = DEFAULT_PROMPTS,
    max_new_tokens: int = 16,
    t_start: float = DEFAULT_T_START,
    num_steps: int = DEFAULT_NUM_STEPS,
    seed: int = 0,
    n_resamples: int = 1000,
    seeds: Sequence[int] = (0,),
    sampling: Mapping[str, float] | None = None,
    positions: str = "all",
    on_items: Callable[[str, float, list[ConceptItem]], None] | None = None,
    method_options: Mapping[str, Mapping[str, Any]] | None = None,
) -> SteeringCurves:
    """Plain steering and steering with each prior, over ``scales``, scored as described above.

    Args:
        model: The steered model (generations are batched over ``prompts``).
        hook_name: The hook to steer; every prior must model it.
        priors: Display name -> prior, or a projection (``steer(projection=...)``: an SAE's
            reconstruction, a PCA projection); may be empty (plain steering only).
        scales: Relative scales ``r``: the hook adds ``r * reference_norm * v / ||v||``.
        reference_norm: The activation norm ``r`` is relative to (e.g. the mean held-out norm).
        concepts / prompts: What to steer towards and which prompts to continue.
        max_new_tokens: Tokens generated per continuation.
        t_start / num_steps / seed: The priors' denoising settings (see ``steer``); the noise
            seed of a generation is ``seed + s`` for its decoding seed ``s``.
        seeds: Decoding seeds; every (concept, prompt) is generated once per seed.
        sampling: None decodes greedily (one seed is then enough); else ``generate`` keywords
            such as ``{"temperature": 0.7, "top_p": 0.9}``, with torch's RNG seeded by each seed
            before each batch, so every method samples with the same random numbers.
        positions: Which positions are steered (``SteeringConfig.positions``).
        on_items: Called with (method, scale, items) after each point's generations, to keep the
            texts (e.g. to read them or to choose examples).
        method_options: Method name -> ``steer`` keywords that replace the shared ones for that
            method, e.g. ``{"prior, edit": {"denoise_mode": "edit", "t_start": 0.3}}`` (the same
            prior may then appear under two names with two settings).
    """
    check_steering_arguments(model, hook_name, priors, scales, reference_norm, concepts, prompts)
    steer_options = relative_steering_options(reference_norm, t_start, num_steps, seed)
    steer_options["positions"] = positions
    method_options = _checked_method_options(priors, steer_options, method_options)
    run = ConceptRun.prepare(
        model, hook_name, concepts, prompts, max_new_tokens, seeds=seeds, sampling=sampling
    )

    def method_generator(name: str, method: DiffusionPrior | Projection | None):
        options = method_options.get(name, steer_options)

        def generate(scale: float) -> list[ConceptItem]:
            items = run.items_at(scale, method, options)
            if on_items is not None:
                on_items(name, scale, items)
            return items

        return generate

    generators = {PLAIN: method_generator(PLAIN, None)}
    generators.update({name: method_generator(name, prior) for name, prior in priors.items()})
    return steering_curves(
        generators,
        scales,
        concept_scorer=lambda items: [item.lift for item in items],
        fluency_scorer=lambda items: [item.nll for item in items],
        fluency_higher_is_better=False,
        n_resamples=n_resamples,
        seed=seed,
        extra_scorers={
            "fluent": lambda items: [float(item.fluent) for item in items],
            "distinct_2": lambda items: [item.distinct_2 for item in items],
            "lexicon_hits": lambda items: [float(item.lexicon_hits) for item in items],
        },
    )


def _checked_method_options(
    priors: Mapping[str, Any],
    steer_options: dict[str, Any],
    method_options: Mapping[str, Mapping[str, Any]] | None,
) -> dict[str, dict[str, Any]]:
    """Method name -> its full ``steer`` options (the shared ones with its own on top); unknown
    names and invalid options fail here, before any generation."""
    method_options = dict(method_options or {})
    unknown = sorted(set(method_options) - set(priors))
    if unknown:
        raise ValueError(
            f"method_options names {unknown}, which are not among the priors {sorted(priors)}."
        )
    merged = {name: {**steer_options, **options} for name, options in method_options.items()}
    for options in merged.values():
        steering_config(1.0, None, options)
    return merged


def relative_steering_options(
    reference_norm: float, t_start: float, num_steps: int, seed: int
) -> dict[str, Any]:
    """The ``steer`` keywords of a sweep over relative scales (``ConceptRun.items_at`` passes
    them on): each scale ``r`` adds ``r * reference_norm`` along the unit direction."""
    return dict(
        t_start=t_start,
        num_steps=num_steps,
        seed=seed,
        scale_mode="relative",
        reference_norm=reference_norm,
    )


@dataclass(frozen=True)
class ConceptItem:
    """One steered continuation and its scores (see the module docstring)."""

    text: str
    lift: float
    nll: float
    fluent: bool
    distinct_2: float
    lexicon_hits: int
    concept: str = ""
    prompt_index: int = 0
    seed: int = 0


def check_steering_arguments(
    model: LensModel,
    hook_name: str,
    priors: Mapping[str, Any],  # DiffusionPrior | Projection; checked with clearer errors
    scales: Sequence[float],
    reference_norm: float,
    concepts: Sequence[SteeringConcept],
    prompts: Sequence[str],
) -> None:
    if not concepts or not prompts:
        raise ValueError("concept_steering_curves needs at least one concept and one prompt.")
    if not scales:
        raise ValueError("scales is empty; pass the relative steering scales to sweep.")
    if not reference_norm > 0:
        raise ValueError(f"reference_norm must be > 0, got {reference_norm!r}.")
    for name, prior in priors.items():
        if name == PLAIN:
            raise ValueError(f"{PLAIN!r} names plain steering; give the prior another name.")
        if not isinstance(prior, DiffusionPrior):
            if not callable(prior):
                raise TypeError(
                    f"priors[{name!r}] must be a DiffusionPrior or a projection (a callable "
                    f"[n, d_model] -> [n, d_model]), got {type(prior).__name__}."
                )
            continue
        prior.check_compatible(
            hook_name=hook_name, d_model=model.cfg.d_model, model_name=model.cfg.model_name
        )


@dataclass
class ConceptRun:
    """What every method's generations share: the prompts, each concept's steering vector and
    word ids, and the unsteered continuation's concept score (the zero of the lift).

    Attributes:
        model / hook_name: The steered model and hook.
        concepts / prompts / max_new_tokens: As in :func:`concept_steering_curves`.
        prompt_tokens: ``[prompt, pos]`` left-padded prompt tokens.
        attention_mask: Their attention mask (0 on the padding).
        eos: The tokenizer's EOS id (scores stop there), or None.
        vectors: Concept name -> raw-space steering vector.
        concept_ids: Concept name -> token ids of its words.
        seeds / sampling: As in :func:`concept_steering_curves`.
        baseline: (concept name, seed) -> concept log-probability of the unsteered continuations.
    """

    model: LensModel
    hook_name: str
    concepts: Sequence[SteeringConcept]
    prompts: Sequence[str]
    max_new_tokens: int
    prompt_tokens: Tensor
    attention_mask: Tensor
    eos: int | None
    vectors: dict[str, Tensor]
    concept_ids: dict[str, list[int]]
    seeds: tuple[int, ...] = (0,)
    sampling: Mapping[str, float] | None = None
    baseline: dict[tuple[str, int], Tensor] = field(default_factory=dict)

    @classmethod
    def prepare(
        cls,
        model: LensModel,
        hook_name: str,
        concepts: Sequence[SteeringConcept],
        prompts: Sequence[str],
        max_new_tokens: int,
        seeds: Sequence[int] = (0,),
        sampling: Mapping[str, float] | None = None,
    ) -> ConceptRun:
        prompt_tokens = model.to_tokens(list(prompts), padding_side="left")
        run = cls(
            model=model,
            hook_name=hook_name,
            concepts=concepts,
            prompts=prompts,
            max_new_tokens=max_new_tokens,
            prompt_tokens=prompt_tokens,
            attention_mask=get_attention_mask(
                model.tokenizer, prompt_tokens, model.cfg.default_prepend_bos, padding_side="left"
            ),
            eos=model.tokenizer.eos_token_id,
            vectors={
                c.name: steering_vector(model, hook_name, c.positive, c.negative) for c in concepts
            },
            concept_ids={c.name: concept_token_ids(model, c.words) for c in concepts},
            seeds=tuple(int(s) for s in seeds),
            sampling=dict(sampling) if sampling is not None else None,
        )
        if not run.seeds:
            raise ValueError("seeds is empty; pass at least one decoding seed.")
        for seed in run.seeds:
            unsteered = run.generate(seed)
            run.baseline.update({(c.name, seed): run.scores(unsteered, c)[0] for c in concepts})
        return run

    def generate(self, seed: int = 0) -> Tensor:
        """Continuations of every prompt (the prompt tokens cut off): greedy, or sampled with
        torch's RNG seeded by ``seed``."""
        if self.sampling is not None:
            torch.manual_seed(seed)
        out = self.model.generate(
            list(self.prompts),
            max_new_tokens=self.max_new_tokens,
            do_sample=self.sampling is not None,
            verbose=False,
            padding_side="left",
            return_type="tokens",
            **(self.sampling or {}),
        )
        return out[:, self.prompt_tokens.shape[1] :]

    def scores(self, continuation: Tensor, concept: SteeringConcept) -> tuple[Tensor, Tensor]:
        """Per prompt: the continuation's concept log-probability and its NLL."""
        result = score_continuations(
            self.model,
            self.prompt_tokens,
            continuation,
            concept_ids=self.concept_ids[concept.name],
            prompt_attention_mask=self.attention_mask,
            continuation_mask=(
                mask_after_eos(continuation, self.eos) if self.eos is not None else None
            ),
        )
        return result.concept_logprob.cpu(), result.nll.cpu()

    def texts(self, continuation: Tensor) -> list[str]:
        """The decoded continuations (special tokens, such as the EOS padding, dropped)."""
        return [self.model.tokenizer.decode(row, skip_special_tokens=True) for row in continuation]

    def items_at(
        self,
        scale: float,
        method: DiffusionPrior | Projection | None,
        steer_options: dict[str, Any],
    ) -> list[ConceptItem]:
        """A :class:`ConceptItem` per (seed, concept, prompt), steering at ``scale`` with
        ``method`` (a prior, a projection, or None for plain steering)."""
        is_prior = isinstance(method, DiffusionPrior)
        items = []
        for seed, concept in itertools.product(self.seeds, self.concepts):
            with steer(
                self.model,
                self.hook_name,
                self.vectors[concept.name],
                scale,
                method if is_prior else None,
                projection=None if is_prior else method,
                **{**steer_options, "seed": steer_options.get("seed", 0) + seed},
            ):
                continuation = self.generate(seed)
            concept_score, nll = self.scores(continuation, concept)
            lift = concept_score - self.baseline[(concept.name, seed)]
            scored = zip(self.texts(continuation), lift.tolist(), nll.tolist(), strict=True)
            for i, (text, lift_i, nll_i) in enumerate(scored):
                judgement = judge_fluency(text, nll_i)
                items.append(
                    ConceptItem(
                        text=text,
                        lift=lift_i,
                        nll=nll_i,
                        fluent=judgement.fluent,
                        distinct_2=judgement.stats.distinct[1],
                        lexicon_hits=lexicon_hits(text, concept.lexicon),
                        concept=concept.name,
                        prompt_index=i,
                        seed=seed,
                    )
                )
        return items
