"""Held-out word lists per steering concept, counted in text by ``text_judge.lexicon_hits``.

No word here shares its first four letters with a word of the concept's contrast prompts or of the
words its log-probability score uses (``concepts.DEFAULT_CONCEPTS``; a test checks it), so a hit
means the steered model produced the concept in words it was never shown for it. Forms are listed
explicitly (no stemming): matching is on whole lower-cased words.
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
    "anger": (
        "mad", "annoyed", "annoying", "irritated", "irritating", "outraged", "outrage", "fury",
        "enraged", "resent", "resentment", "frustrated", "frustrating", "frustration", "yell",
        "yelled", "yelling", "shout", "shouted", "shouting", "stupid", "damn", "ridiculous",
        "unacceptable", "disgusting", "disgusted", "sick", "fed", "upset", "hostile", "bitter",
        "violent", "revenge", "fight", "insult",
    ),
    "weddings": (
        "newlywed", "newlyweds", "engaged", "engagement", "fiance", "fiancee", "fiancé", "husband",
        "wife", "spouse", "honeymoon", "vow", "vows", "altar", "proposal", "proposed", "propose",
        "romantic", "romance", "couple", "reception", "veil", "gown",
    ),
    "the sea": (
        "boat", "boats", "tide", "tides", "shore", "coast", "coastal", "island", "islands",
        "harbor", "harbour", "fish", "fishing", "marine", "salt", "salty", "surf", "surfing",
        "seaside", "sand", "sandy", "voyage", "captain", "whale", "whales", "dolphin", "dolphins",
        "seagull", "seagulls", "lighthouse", "port",
    ),
    "food": (
        "recipe", "recipes", "eat", "eating", "dish", "dishes", "flavor", "flavour", "flavors",
        "spicy", "sweet", "salad", "cheese", "chicken", "rice", "fruit", "sauce", "dessert",
        "restaurant", "hungry", "baking", "pizza", "sugar", "butter", "chocolate", "cuisine",
        "ingredients", "oven",
    ),
    "sports": (
        "win", "wins", "winning", "lose", "lost", "coach", "league", "championship", "champion",
        "tournament", "athlete", "athletes", "basketball", "soccer", "tennis", "baseball",
        "olympic", "olympics", "fans", "season", "referee", "sport", "sports", "trophy", "opponent",
        "defense", "victory",
    ),
    "space": (
        "nasa", "universe", "cosmic", "cosmos", "earth", "sun", "solar", "lunar", "jupiter",
        "saturn", "asteroid", "comet", "satellite", "gravity", "alien", "aliens", "mission",
        "nebula", "milky", "meteor",
    ),
    "music": (
        "drum", "drums", "violin", "lyrics", "album", "albums", "rhythm", "tune", "tunes", "chorus",
        "jazz", "rock", "pop", "dance", "dancing", "beat", "beats", "notes", "chord", "chords",
        "radio", "opera", "choir", "harmony",
    ),
}
# fmt: on
