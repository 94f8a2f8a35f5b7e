"""Held-out word lists per steering concept, counted in text by ``text_judge.lexicon_hits``.

No word here shares its first four letters with a word of the concept's contrast prompts or of the
words its log-probability score uses (``concept_steering.DEFAULT_CONCEPTS``; a test checks it), so
a hit means the steered model produced the concept in words it was never shown for it. Forms are
listed explicitly (no stemming): matching is on whole lower-cased words.
"""

from __future__ import annotations

# fmt: off
CONCEPT_LEXICONS: dict[str, tuple[str, ...]] = {
    "joy": (
        "glad", "delight", "delighted", "delightful", "cheerful", "cheer", "cheers", "smile",
        "smiles", "smiled", "smiling", "laugh", "laughs", "laughed", "laughing", "laughter", "fun",
        "excited", "exciting", "excitement", "thrilled", "pleased", "pleasure", "amazing",
        "fantastic", "awesome", "excellent", "enjoy", "enjoyed", "enjoying", "beautiful",
        "thankful", "blessed", "bliss", "yay", "hooray", "party",
    ),
    "weddings": (
        "newlywed", "newlyweds", "engaged", "engagement", "fiance", "fiancee", "fiancé",
        "husband", "wife", "spouse", "honeymoon", "vow", "vows", "altar", "proposal", "proposed",
        "propose", "romantic", "romance", "couple", "reception", "veil", "gown",
    ),
    "the sea": (
        "boat", "boats", "tide", "tides", "shore", "coast", "coastal", "island", "islands",
        "harbor", "harbour", "fish", "fishing", "marine", "salt", "salty", "surf", "surfing",
        "seaside", "sand", "sandy", "voyage", "captain", "whale", "whales", "dolphin", "dolphins",
        "seagull", "seagulls", "lighthouse", "port",
    ),
}
# fmt: on
