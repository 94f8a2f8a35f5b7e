import pytest
import torch

from tests.priors.helpers import build_tiny_prior
from tl_diffusion_prior.evaluate.concept_steering import PLAIN, concept_steering_curves
from tl_diffusion_prior.evaluate.concepts import DEFAULT_CONCEPTS, SteeringConcept

HOOK = "blocks.15.hook_resid_post"


def test_concept_validation():
    with pytest.raises(ValueError, match="positive must be a non-empty sequence"):
        SteeringConcept("x", positive="one string", negative=("b",), words=("w",))
    with pytest.raises(ValueError, match="words must be a non-empty"):
        SteeringConcept("x", positive=("a",), negative=("b",), words=())
    with pytest.raises(ValueError, match="lexicon must be a sequence of words"):
        SteeringConcept("x", positive=("a",), negative=("b",), words=("w",), lexicon="glad")
    concept = SteeringConcept("x", positive=["a"], negative=["b"], words=["w"], lexicon=["g"])
    assert concept.positive == ("a",)  # lists become tuples: concepts stay hashable
    assert concept.lexicon == ("g",)
    assert all(c.lexicon for c in DEFAULT_CONCEPTS)


@pytest.mark.slow
def test_curves_on_the_default_model(default_model):
    prior = build_tiny_prior(
        "mlp", d_model=576, hook_name=HOOK, model_name=default_model.cfg.model_name
    )
    prior.set_normalization(torch.zeros(576), torch.full((576,), 9.0))
    prompts = ("Tell me about your weekend.", "The town is")
    curves = concept_steering_curves(
        default_model,
        HOOK,
        {"tiny prior": prior},
        scales=(0.0, 0.6),
        reference_norm=170.0,
        concepts=DEFAULT_CONCEPTS[:1],
        prompts=prompts,
        max_new_tokens=6,
        num_steps=2,
        n_resamples=20,
    )
    points = {(p.method, p.scale): p for p in curves.points}
    assert set(points) == {(m, s) for m in (PLAIN, "tiny prior") for s in (0.0, 0.6)}
    assert all(p.n == len(prompts) for p in curves.points)
    # Scale 0 without a prior is the unsteered model: no lift at all.
    assert points[(PLAIN, 0.0)].concept.mean == 0.0
    # Steering towards joy makes joyful words more likely than in the unsteered continuation.
    assert points[(PLAIN, 0.6)].concept.mean > 0.5
    assert curves.front and all(0 <= i < len(curves.points) for i in curves.front)
    # The text judge's measures come with every point.
    for point in curves.points:
        assert set(point.extra) == {"fluent", "distinct_2", "lexicon_hits"}
        assert 0.0 <= point.extra["fluent"].mean <= 1.0
        assert 0.0 < point.extra["distinct_2"].mean <= 1.0
        assert point.extra["lexicon_hits"].mean >= 0.0


def test_bad_arguments(tiny_model):
    prior = build_tiny_prior("mlp", d_model=64, hook_name="blocks.1.hook_resid_post")
    common = dict(model=tiny_model, hook_name="blocks.1.hook_resid_post")
    with pytest.raises(ValueError, match="scales is empty"):
        concept_steering_curves(**common, priors={}, scales=(), reference_norm=1.0)
    with pytest.raises(ValueError, match="reference_norm must be > 0"):
        concept_steering_curves(**common, priors={}, scales=(0.1,), reference_norm=0.0)
    with pytest.raises(ValueError, match="give the prior another name"):
        concept_steering_curves(**common, priors={PLAIN: prior}, scales=(0.1,), reference_norm=1.0)
    with pytest.raises(ValueError, match="at least one concept"):
        concept_steering_curves(**common, priors={}, scales=(0.1,), reference_norm=1.0, concepts=())
