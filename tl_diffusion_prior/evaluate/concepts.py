"""Concepts to steer towards, and prompts to continue: the steering evaluation's and benchmark's.

Eight concepts, two sentiments (joy, anger) and six topics, each built from four matched contrast
pairs (a positive sentence and a negative one that differs in the concept and little else), the
words whose next-token probability the unsteered model's concept score reads (``words``), and a
held-out lexicon counted in the generated text (:mod:`~tl_diffusion_prior.evaluate.
concept_lexicons`). The prompts are neutral requests that name none of the concepts; none of them
is used to build a vector.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tl_diffusion_prior.evaluate.concept_lexicons import CONCEPT_LEXICONS


@dataclass(frozen=True)
class SteeringConcept:
    """A concept to steer towards.

    Attributes:
        name: display name.
        positive: prompts that express the concept.
        negative: matched prompts that do not.
        words: words whose next-token probability signals the concept (each word's first token,
            with and without a leading space; see ``concept_token_ids``).
        lexicon: held-out words counted in the generated text (none of them in the prompts or
            ``words``); empty counts nothing.
    """

    name: str
    positive: Sequence[str]
    negative: Sequence[str]
    words: Sequence[str]
    lexicon: Sequence[str] = ()

    def __post_init__(self) -> None:
        if isinstance(self.lexicon, str) or not all(isinstance(w, str) for w in self.lexicon):
            raise ValueError(
                f"SteeringConcept {self.name!r}: lexicon must be a sequence of words, got "
                f"{self.lexicon!r}."
            )
        object.__setattr__(self, "lexicon", tuple(self.lexicon))
        for field_name in ("positive", "negative", "words"):
            values = getattr(self, field_name)
            if isinstance(values, str) or not values or not all(isinstance(v, str) for v in values):
                raise ValueError(
                    f"SteeringConcept {self.name!r}: {field_name} must be a non-empty sequence of "
                    f"strings, got {values!r}."
                )
            object.__setattr__(self, field_name, tuple(values))


DEFAULT_CONCEPTS: tuple[SteeringConcept, ...] = (
    SteeringConcept(
        "joy",
        positive=(
            "I am so happy and grateful today!",
            "What a wonderful, joyful celebration.",
            "My heart is full of love and happiness.",
            "Everything went perfectly and I feel great!",
        ),
        negative=(
            "I am so sad and miserable today.",
            "What a terrible, gloomy funeral.",
            "My heart is full of grief and sorrow.",
            "Everything went wrong and I feel awful.",
        ),
        words=("happy", "joy", "wonderful", "love"),
        lexicon=CONCEPT_LEXICONS["joy"],
    ),
    SteeringConcept(
        "anger",
        positive=(
            "I am furious and I will not calm down!",
            "This makes me so angry I could scream.",
            "He slammed the door in a rage.",
            "I hate this and I am livid about it.",
        ),
        negative=(
            "I am relaxed and I will stay calm.",
            "This makes me so peaceful I could sleep.",
            "He closed the door with a smile.",
            "I like this and I am fine with it.",
        ),
        words=("angry", "furious", "rage", "hate"),
        lexicon=CONCEPT_LEXICONS["anger"],
    ),
    SteeringConcept(
        "weddings",
        positive=(
            "We are getting married at the wedding next week.",
            "The bride and groom exchanged rings at the ceremony.",
            "Our marriage was celebrated with a wedding cake.",
            "The bridesmaids walked down the aisle before the bride.",
        ),
        negative=(
            "We are filing our taxes at the office next week.",
            "The clerk and manager exchanged forms at the meeting.",
            "Our paperwork was processed with a rubber stamp.",
            "The accountants walked down the hallway before the audit.",
        ),
        words=("wedding", "bride", "marriage", "married"),
        lexicon=CONCEPT_LEXICONS["weddings"],
    ),
    SteeringConcept(
        "the sea",
        positive=(
            "The waves crashed on the beach by the ocean.",
            "Sailors crossed the stormy sea in a ship.",
            "We swam in the blue ocean water.",
            "The sea breeze blew across the beach.",
        ),
        negative=(
            "The cars crowded the road through the city.",
            "Drivers crossed the busy town in a truck.",
            "We walked in the grey city streets.",
            "The traffic noise blew across the parking lot.",
        ),
        words=("sea", "ocean", "waves", "beach"),
        lexicon=CONCEPT_LEXICONS["the sea"],
    ),
    SteeringConcept(
        "food",
        positive=(
            "I cooked a delicious dinner with fresh vegetables.",
            "The soup tasted savory and the bread was warm.",
            "We baked a cake and ate pasta for lunch.",
            "The chef prepared a tasty meal in the kitchen.",
        ),
        negative=(
            "I repaired a broken chair with old screws.",
            "The paint looked glossy and the wall was dry.",
            "We fixed a fence and sorted boxes for storage.",
            "The clerk prepared a long report in the office.",
        ),
        words=("food", "delicious", "cook", "meal"),
        lexicon=CONCEPT_LEXICONS["food"],
    ),
    SteeringConcept(
        "sports",
        positive=(
            "The team scored a goal in the last minute of the match.",
            "She won the race and the crowd cheered in the stadium.",
            "He trains every day to play football.",
            "The players kicked the ball across the field.",
        ),
        negative=(
            "The committee filed a report in the last minute of the session.",
            "She read the book and the audience listened in the library.",
            "He studies every day to learn history.",
            "The students carried the books across the hall.",
        ),
        words=("team", "game", "score", "player"),
        lexicon=CONCEPT_LEXICONS["sports"],
    ),
    SteeringConcept(
        "space",
        positive=(
            "The astronauts launched their rocket toward the moon.",
            "Stars and planets filled the dark night sky.",
            "The telescope revealed a distant galaxy.",
            "The spacecraft orbited Mars for a year.",
        ),
        negative=(
            "The farmers loaded their tractor toward the barn.",
            "Cows and sheep filled the green meadow.",
            "The microscope revealed a tiny cell.",
            "The delivery truck circled the block for an hour.",
        ),
        words=("space", "planet", "stars", "rocket"),
        lexicon=CONCEPT_LEXICONS["space"],
    ),
    SteeringConcept(
        "music",
        positive=(
            "She played a beautiful song on the piano.",
            "The band performed loud music at the concert.",
            "He sang a melody while strumming his guitar.",
            "The orchestra rehearsed the symphony all evening.",
        ),
        negative=(
            "She wrote a careful memo on the computer.",
            "The staff performed routine checks at the warehouse.",
            "He read a manual while fixing his bicycle.",
            "The committee reviewed the budget all evening.",
        ),
        words=("music", "song", "sing", "band"),
        lexicon=CONCEPT_LEXICONS["music"],
    ),
)

#: Sixteen neutral prompts; the evaluation's steering curves continue the first few.
DEFAULT_PROMPTS: tuple[str, ...] = (
    "Tell me about your weekend.",
    "Write a few sentences about the town where you live.",
    "What is a good way to spend an afternoon?",
    "Describe your favourite place.",
    "What did you do yesterday?",
    "Write a short story about a friend.",
    "What are your plans for next month?",
    "Tell me something interesting.",
    "How was your day?",
    "Describe the view from your window.",
    "Write a letter to a neighbour.",
    "What do you think about when you wake up?",
    "Describe a photo you like.",
    "What should I write about in my diary?",
    "Tell me about your family.",
    "Write the opening of a novel.",
)


def chat_prompts(tokenizer, requests: Sequence[str]) -> list[str]:
    """``requests`` as user turns of the tokenizer's chat template, ready for the assistant's
    answer. An instruct model such as SmolLM2-Instruct answers those; continuing a bare request
    often ends at once with EOS, which makes an empty, unjudgeable text."""
    return [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": request}], tokenize=False, add_generation_prompt=True
        )
        for request in requests
    ]
