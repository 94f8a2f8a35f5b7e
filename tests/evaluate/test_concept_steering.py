import pytest
import torch

from tests.lens_kinds import build_tiny_model, tiny_tokenizer
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


def test_sampled_seeds_projections_and_kept_texts():
    model = build_tiny_model(d_vocab=99)  # the character tokenizer's vocabulary
    if model.tokenizer is None:
        model.set_tokenizer(tiny_tokenizer())
    hook = "blocks.1.hook_resid_post"
    concept = SteeringConcept(
        "x", positive=("a b c", "d e"), negative=("f g h", "i j"), words=("k",)
    )
    kept = {}
    curves = concept_steering_curves(
        model,
        hook,
        {"erase": lambda x: torch.zeros_like(x), "erase, edit": lambda x: torch.zeros_like(x)},
        scales=(0.0, 0.5),
        reference_norm=5.0,
        concepts=(concept,),
        prompts=("one two", "three four five"),
        max_new_tokens=4,
        seeds=(0, 1),
        sampling={"temperature": 1.0},
        n_resamples=20,
        on_items=lambda method, scale, items: kept.__setitem__((method, scale), items),
        method_options={"erase, edit": {"denoise_mode": "edit"}},
    )
    assert set(kept) == {(m, s) for m in (PLAIN, "erase", "erase, edit") for s in (0.0, 0.5)}
    items = kept[(PLAIN, 0.0)]
    assert all(p.n == 4 for p in curves.points)  # 2 seeds x 2 prompts
    assert sorted((i.seed, i.prompt_index) for i in items) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    # Unsteered and sampled with the baseline's seed: the very same texts, so no lift.
    assert all(i.lift == 0.0 for i in items)
    # Two seeds sample differently (at least one prompt's text differs).
    by_seed = {s: [i.text for i in items if i.seed == s] for s in (0, 1)}
    assert by_seed[0] != by_seed[1]
    # Replacing the steered activations by zeros changes the text even at scale 0.
    erased = [i.text for i in kept[("erase", 0.0)]]
    assert erased != [i.text for i in items]
    # The same projection in edit mode (h + P(h + delta) - P(h)) leaves scale 0 unsteered.
    assert [i.text for i in kept[("erase, edit", 0.0)]] == [i.text for i in items]


def test_method_options_checked_before_any_generation(tiny_model):
    common = dict(
        model=tiny_model,
        hook_name="blocks.1.hook_resid_post",
        priors={"p": lambda x: x},
        scales=(0.1,),
        reference_norm=1.0,
    )
    with pytest.raises(ValueError, match="not among the priors"):
        concept_steering_curves(**common, method_options={"q": {"t_start": 0.3}})
    with pytest.raises(ValueError, match="denoise_mode"):
        concept_steering_curves(**common, method_options={"p": {"denoise_mode": "nope"}})
    with pytest.raises(TypeError, match="Unknown steering option"):
        concept_steering_curves(**common, method_options={"p": {"tstart": 0.3}})


def test_a_method_must_be_a_prior_or_a_projection(tiny_model):
    with pytest.raises(TypeError, match="DiffusionPrior or a projection"):
        concept_steering_curves(
            tiny_model, "blocks.1.hook_resid_post", {"bad": 3}, scales=(0.1,), reference_norm=1.0
        )
