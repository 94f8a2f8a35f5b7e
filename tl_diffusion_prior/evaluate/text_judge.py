"""A judge of generated text that repetition cannot fool, and a concept count from held-out words.

The continuation NLL under the unsteered model (:mod:`~tl_diffusion_prior.evaluate.fluency`)
rewards repetition: once a text loops ("the the the ...", "iteritemsiteritems...") every next token
is easy to predict, so a degenerate text can score better than a fluent one. This module reads the
text itself:

* :func:`repetition_stats`: distinct-n for n = 1, 2, 3 over words (distinct n-grams / n-grams), the
  longest word n-gram that occurs twice, the fraction of words inside a word 2-gram that occurs
  twice (a short text that turns on itself, "The item of the item.", has few 2-grams, so its
  distinct-2 stays high while most of its words repeat), the fraction of characters inside a
  loop (a unit of 2+ characters repeated 3+ times in a row, which catches loops inside one
  "word" such as ``"iteritemsiteritemsiteritems"`` or ``"##!##!##!"``) and the fraction of junk
  characters
  (neither letters, digits, spaces nor common punctuation; markdown's ``*`` and ``@`` count as
  junk: strongly steered text dissolves into them), of letters and digits, and of blank space.
* :func:`judge_fluency`: a text is fluent when it is not empty, none of those measures crosses its
  threshold, and (if given) its NLL is at most :data:`MAX_FLUENT_NLL`.
* :func:`lexicon_hits`: how many words of a held-out concept lexicon occur in the text, a concept
  score that does not come from any model's log-probabilities (the lexicons in
  :mod:`~tl_diffusion_prior.evaluate.concept_lexicons` share no word with the prompts that build
  the vectors).

Thresholds were set on hand-written texts (``tests/evaluate/test_text_judge.py``), on the
default model's greedy steered generations (``benchmarks/results/steer_scales.md``) and, since
2026-12-01, on 80 sampled steered generations of the steering benchmark read and labelled by hand
(``tests/evaluate/data/labelled_generations.json``, drawn by ``benchmarks/judge_audit.py`` from
texts the judge passed when its NLL cap was 5 nats: 43 of the 80 read as broken).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*", re.UNICODE)
LETTERS = re.compile(r"[^\W\d_]+", re.UNICODE)
LOOP = re.compile(r"(.{2,}?)\1{2,}", re.DOTALL)
PUNCTUATION = set(".,;:!?'\"-()[]/&%$’‘“”…")

#: A text is degenerate below this distinct-2 (most 2-grams repeated)...
MIN_DISTINCT_2 = 0.6
#: ...or when some word n-gram this long occurs twice...
MAX_REPEAT_WORDS = 5
#: ...or when more than this fraction of its words lie inside a word 2-gram that occurs twice
#: (texts of at least 4 words; no unsteered benchmark text, of 928, is above 0.33)...
MAX_REPEATED_2GRAM_FRACTION = 0.65
#: ...or when loops cover more than this fraction of its characters...
MAX_LOOP_FRACTION = 0.3
#: ...or junk characters more than this fraction of its non-space characters...
MAX_JUNK_FRACTION = 0.2
#: ...or letters and digits less than this fraction of its non-space characters ("A (...) ! !")...
MIN_ALNUM_FRACTION = 0.5
#: ...or blank space (newlines, spaces) more than this fraction of all its characters.
MAX_BLANK_FRACTION = 0.4
#: Mean nats per token under the unsteered default model above which text counts as not fluent.
#: Greedy unsteered continuations score about 0.5-1.5 and sampled ones (temperature 0.7) up to
#: 1.9, hand-written English 1.7-3.95, fully random word salad 7+; but grammatical-looking
#: salad ("I hope you to support and support with my ongoing support") scores 4-5. Of the hand-
#: labelled steered generations, 29 of 35 with NLL above 4 are broken and 14 of 45 at or below
#: it (of the caps 3, 3.25, ..., 5, the one that agrees with most labels: 75%).
MAX_FLUENT_NLL = 4.0


@dataclass(frozen=True)
class RepetitionStats:
    """Repetition and junk measures of one text (see module docstring).

    Attributes:
        n_words: Words counted (letters and digits, with inner apostrophes: "I'll" is one word;
            punctuation is left out of the n-grams so that ". I'll" does not count as a phrase).
        distinct: distinct-1, -2 and -3 (1.0 when the text has no n-grams of that size).
        longest_repeat: Words in the longest n-gram that occurs at two different places.
        repeated_2gram_fraction: Fraction of the words inside a 2-gram that occurs twice.
        loop_fraction: Fraction of the characters inside a loop.
        junk_fraction: Fraction of the non-space characters that are junk.
        alnum_fraction: Fraction of the non-space characters that are letters or digits.
        blank_fraction: Fraction of all characters that are blank space.
    """

    n_words: int
    distinct: tuple[float, float, float]
    longest_repeat: int
    loop_fraction: float
    repeated_2gram_fraction: float
    junk_fraction: float
    alnum_fraction: float = 1.0
    blank_fraction: float = 0.0


def _distinct(words: list[str], n: int) -> float:
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 1.0


def _longest_repeat(words: list[str]) -> int:
    longest = 0
    for n in range(1, len(words)):
        seen: set[tuple[str, ...]] = set()
        found = False
        for i in range(len(words) - n + 1):
            gram = tuple(words[i : i + n])
            if gram in seen:
                found = True
                break
            seen.add(gram)
        if not found:
            break
        longest = n
    return longest


def _repeated_2gram_fraction(words: list[str]) -> float:
    places: dict[tuple[str, str], list[int]] = {}
    for i in range(len(words) - 1):
        places.setdefault((words[i], words[i + 1]), []).append(i)
    repeated = [starts for starts in places.values() if len(starts) > 1]
    covered = {i + k for starts in repeated for i in starts for k in (0, 1)}
    return len(covered) / len(words) if words else 0.0


def _loop_fraction(text: str) -> float:
    squeezed = re.sub(r"\s+", " ", text.strip().lower())
    if not squeezed:
        return 0.0
    return sum(len(m.group(0)) for m in LOOP.finditer(squeezed)) / len(squeezed)


def _junk_fraction(text: str) -> float:
    chars = [c for c in text if not c.isspace()]
    if not chars:
        return 0.0
    junk = sum(1 for c in chars if not (c.isalnum() or c in PUNCTUATION))
    return junk / len(chars)


def _alnum_fraction(text: str) -> float:
    chars = [c for c in text if not c.isspace()]
    return sum(c.isalnum() for c in chars) / len(chars) if chars else 1.0


def repetition_stats(text: str) -> RepetitionStats:
    """Distinct-n, the longest repeated n-gram, loops and junk of ``text`` (case-insensitive)."""
    words = WORD.findall(text.lower())
    distinct = (_distinct(words, 1), _distinct(words, 2), _distinct(words, 3))
    return RepetitionStats(
        n_words=len(words),
        distinct=distinct,
        longest_repeat=_longest_repeat(words),
        repeated_2gram_fraction=_repeated_2gram_fraction(words),
        loop_fraction=_loop_fraction(text),
        junk_fraction=_junk_fraction(text),
        alnum_fraction=_alnum_fraction(text),
        blank_fraction=sum(c.isspace() for c in text) / len(text) if text else 0.0,
    )


@dataclass(frozen=True)
class FluencyJudgement:
    """Whether a text reads as fluent, and why not.

    Attributes:
        fluent: True when no reason was found.
        reasons: What failed, e.g. ``"distinct-2 0.25 < 0.6"``.
        stats: The :class:`RepetitionStats` it was judged on.
        nll: The NLL it was judged on, if one was given.
    """

    fluent: bool
    reasons: tuple[str, ...]
    stats: RepetitionStats
    nll: float | None = field(default=None)


def judge_fluency(
    text: str, nll: float | None = None, max_nll: float = MAX_FLUENT_NLL
) -> FluencyJudgement:
    """Judge ``text`` fluent or not, from its repetition measures and (optionally) its NLL."""
    stats = repetition_stats(text)
    reasons = []
    if not text.strip():
        reasons.append("empty")
    if stats.distinct[1] < MIN_DISTINCT_2:
        reasons.append(f"distinct-2 {stats.distinct[1]:.2f} < {MIN_DISTINCT_2}")
    if stats.longest_repeat >= MAX_REPEAT_WORDS:
        reasons.append(f"repeats a {stats.longest_repeat}-word phrase")
    if stats.n_words >= 4 and stats.repeated_2gram_fraction > MAX_REPEATED_2GRAM_FRACTION:
        reasons.append(f"{stats.repeated_2gram_fraction:.0%} of its words in repeated 2-grams")
    if stats.loop_fraction > MAX_LOOP_FRACTION:
        reasons.append(f"loops over {stats.loop_fraction:.0%} of the text")
    if stats.junk_fraction > MAX_JUNK_FRACTION:
        reasons.append(f"{stats.junk_fraction:.0%} junk characters")
    if stats.alnum_fraction < MIN_ALNUM_FRACTION:
        reasons.append(f"only {stats.alnum_fraction:.0%} letters and digits")
    if stats.blank_fraction > MAX_BLANK_FRACTION:
        reasons.append(f"{stats.blank_fraction:.0%} blank space")
    if nll is not None and not (math.isfinite(nll) and nll <= max_nll):
        reasons.append(f"NLL {nll:.2f} > {max_nll:g}")
    return FluencyJudgement(not reasons, tuple(reasons), stats, nll)


def lexicon_hits(text: str, lexicon: Iterable[str]) -> int:
    """How many words of ``text`` (lower-cased, letters only) are in ``lexicon``."""
    words = set(word.lower() for word in lexicon)
    return sum(1 for word in LETTERS.findall(text.lower()) if word in words)
