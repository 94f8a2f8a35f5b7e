"""The text judge on hand-written texts: fluent vs degenerate, on- vs off-concept; and against
hand-labelled generations of the steering benchmark."""

import json
import re
from pathlib import Path

import pytest

from tl_diffusion_prior.evaluate.concept_lexicons import CONCEPT_LEXICONS
from tl_diffusion_prior.evaluate.concepts import DEFAULT_CONCEPTS
from tl_diffusion_prior.evaluate.text_judge import judge_fluency, lexicon_hits, repetition_stats

FLUENT = [
    "The cat sat on the mat and looked out of the window.",
    "I spent Saturday reading in the garden, then cooked dinner for my sister and her kids.",
    "What's on your mind? I'm happy to help with anything you need today.",
    "I'm going to the market tomorrow. I'll be there with a basket. I'll give you a call.",
    "Prices rose by 3% in March, the largest monthly increase since 2019.",
]
DEGENERATE = [
    "the the the the the the the the the the",
    "iteritemsiteritemsiteritemsiteritemsiteritems",
    "##!##!##!##!##!##!",
    "I'm looking to discuss the upcoming event. I'm looking to discuss the upcoming event.",
    "## 🌱 ### 🎽 ### ### ### ###",
    'A moment in no."\n\n****\n\n**@**\n\n****\n\n@**',
    "I'm here to help you with your business, and I'm here to help you with your business.",
    "\n\nA (...)\n\n!\n\n!\n\n\n\n\n",
    "\n\nA,\ns\n\nA is\n\n\n\n\n\n",
    "The item of the item.",  # passed before 2026-12-01 (from the steering benchmark)
    "Dear [Recipient's Name]\n\n---\n\nDear [Recipient's Name],\n\n**🌱**\n\n🌱\n",
    "",
]
LABELLED = Path(__file__).parents[1] / "fixtures" / "labelled_generations.json"


@pytest.mark.parametrize("text", FLUENT)
def test_fluent_texts_pass(text):
    judgement = judge_fluency(text)
    assert judgement.fluent, judgement.reasons


@pytest.mark.parametrize("text", DEGENERATE)
def test_degenerate_texts_fail(text):
    judgement = judge_fluency(text)
    assert not judgement.fluent and judgement.reasons


def test_nll_threshold_counts_when_given():
    assert judge_fluency(FLUENT[0], nll=1.2).fluent
    judgement = judge_fluency(FLUENT[0], nll=7.5)
    assert not judgement.fluent and judgement.reasons == ("NLL 7.50 > 4",)
    assert not judge_fluency(FLUENT[0], nll=float("nan")).fluent


def test_repetition_measures():
    stats = repetition_stats("a b a b a b a b")
    assert stats.distinct == (2 / 8, 2 / 7, 2 / 6)
    assert stats.longest_repeat == 6  # "a b a b a b" at 0 and 2
    assert stats.loop_fraction == pytest.approx(12 / 15)  # "a b " three times in a row
    clean = repetition_stats(FLUENT[0])
    assert clean.distinct[1] == 1.0 and clean.loop_fraction == 0.0 and clean.junk_fraction == 0.0
    assert clean.longest_repeat == 1  # "the" twice
    assert repetition_stats("##!##!").junk_fraction == pytest.approx(4 / 6)
    assert repetition_stats("a (.)").alnum_fraction == pytest.approx(1 / 4)
    assert repetition_stats("ab\n\n\n").blank_fraction == pytest.approx(3 / 5)
    assert repetition_stats("The item of the item.").repeated_2gram_fraction == pytest.approx(4 / 5)
    assert clean.repeated_2gram_fraction == 0.0


def test_judge_agrees_with_hand_labels_of_steered_generations():
    """80 steered generations, labelled by reading the text alone (benchmarks/judge_audit.py):
    drawn from the texts the judge passed with its old 5-nat cap, 43 of which read as broken."""
    rows = json.loads(LABELLED.read_text())
    broken = [row["label"] == "broken" for row in rows]
    passed = [judge_fluency(row["text"], row["nll"]).fluent for row in rows]
    agree = sum(p != b for p, b in zip(passed, broken, strict=True)) / len(rows)
    broken_passed = sum(p and b for p, b in zip(passed, broken, strict=True)) / sum(broken)
    fluent_failed = sum(not p and not b for p, b in zip(passed, broken, strict=True))
    assert agree >= 0.7 and broken_passed < 0.5, (agree, broken_passed)
    assert fluent_failed <= 0.2 * (len(rows) - sum(broken)), fluent_failed


ON_CONCEPT = {
    "joy": "We laughed and smiled all afternoon; it was such a delightful, fun party.",
    "weddings": "My fiance and I picked the altar flowers and planned our honeymoon.",
    "the sea": "The boat left the harbor at dawn and the captain watched the whales.",
    "anger": "I was so annoyed and frustrated that I yelled; it was ridiculous and unacceptable.",
    "food": "The recipe calls for rice, chicken and a spicy sauce, with a chocolate dessert.",
    "sports": "The coach said the league championship was a victory for the fans.",
    "space": "The comet passed Jupiter and Saturn on its way around the sun.",
    "music": "The jazz album had a great rhythm, a catchy chorus and clever lyrics.",
}
OFF_CONCEPT = "The quarterly tax forms are due at the office on Monday morning."


@pytest.mark.parametrize("concept", sorted(ON_CONCEPT))
def test_lexicon_hits_on_vs_off_concept(concept):
    lexicon = CONCEPT_LEXICONS[concept]
    assert lexicon_hits(ON_CONCEPT[concept], lexicon) >= 3
    assert lexicon_hits(OFF_CONCEPT, lexicon) == 0
    others = [text for name, text in ON_CONCEPT.items() if name != concept]
    assert all(lexicon_hits(text, lexicon) == 0 for text in others)


def test_every_concept_has_a_lexicon_and_an_on_concept_text():
    assert set(ON_CONCEPT) == set(CONCEPT_LEXICONS) == {c.name for c in DEFAULT_CONCEPTS}


def test_lexicon_matches_whole_words_case_insensitively():
    assert lexicon_hits("FUN, fun; funny fungus", ("fun",)) == 2
    assert lexicon_hits("Mon fiancé", ("fiancé",)) == 1


def test_lexicons_are_held_out_from_the_vectors_prompts_and_scored_words():
    for concept in DEFAULT_CONCEPTS:
        used = set(re.findall(r"[a-z]+", " ".join(concept.positive + concept.negative).lower()))
        used |= {word.lower() for word in concept.words}
        for word in CONCEPT_LEXICONS[concept.name]:
            clashes = [u for u in used if u[:4] == word[:4]]
            assert not clashes, f"{concept.name}: {word!r} is close to {clashes}"


@pytest.mark.slow
def test_nll_cap_separates_written_english_from_word_salad_on_the_default_model(default_model):
    from tl_diffusion_prior.evaluate.fluency import continuation_nll
    from tl_diffusion_prior.evaluate.text_judge import MAX_FLUENT_NLL

    prompt = default_model.to_tokens("Tell me about your weekend.")
    fluent = [
        " I went hiking with my friends on Saturday and we had a picnic by the lake.",
        " It was quiet. I read a book, cooked dinner and watched a film on Sunday.",
    ]
    salad = [
        " purple keyboard seventeen whom banana quickly of tax elephant the river",
        # grammatical-looking salad from the steering benchmark: 4.4-4.7 nats
        " I hope you to support and support with my ongoing support, and I look to continue.",
        " I remembered you to have a night at a party in on.",
        " ## ** @@ ]] iteritems }} 0x3F <> ;; undefined hatch rhombus",
    ]

    def nll(text):
        tokens = default_model.to_tokens(text, prepend_bos=False)
        return continuation_nll(default_model, prompt, tokens).item()

    fluent_nll, salad_nll = [nll(t) for t in fluent], [nll(t) for t in salad]
    assert max(fluent_nll) < MAX_FLUENT_NLL < min(salad_nll), (fluent_nll, salad_nll)
    assert all(judge_fluency(t, n).fluent for t, n in zip(fluent, fluent_nll, strict=True))
    assert not any(judge_fluency(t, n).fluent for t, n in zip(salad, salad_nll, strict=True))
