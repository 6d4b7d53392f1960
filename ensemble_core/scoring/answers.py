"""Answer keys: what makes two answers "the same" for voting and agreement. Text is lower-cased and stripped
of punctuation; math answers reduce to their final number ("#### 42" or the last number); multiple-choice
answers to their letter; tool calls to their name and arguments (ids differ between members and never
count)."""

from __future__ import annotations

import json
import re
import string
from collections.abc import Callable
from typing import Literal

from ensemble_core.types import Generation

NormaliserName = Literal["auto", "text", "number", "choice"]
Normaliser = Callable[[str], str]

_FINAL_MARK = re.compile(r"####\s*(-?[\d,]*\.?\d+)")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")
_CHOICE_PATTERNS = [
    re.compile(r"(?i:answer)\s*(?:(?i:is)|:)?\s*\(?([A-J])\)?(?![A-Za-z])"),
    re.compile(r"\(([A-J])\)"),
    re.compile(r"^\s*([A-J])(?:[.:)]|\s*$)"),
]
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalise_text(text: str) -> str:
    """Lower case, no punctuation, single spaces: "The answer is Paris." -> "the answer is paris"."""
    return " ".join(text.lower().translate(_PUNCTUATION).split())


def _canonical_number(raw: str) -> str:
    value = float(raw.replace(",", ""))
    return str(int(value)) if value.is_integer() else repr(value)


def final_number(text: str) -> str | None:
    """The number after "####" (GSM8K style), else the last number in the text; None without a number."""
    marked = _FINAL_MARK.search(text)
    if marked:
        return _canonical_number(marked.group(1))
    numbers = _NUMBER.findall(text)
    return _canonical_number(numbers[-1]) if numbers else None


def choice_letter(text: str) -> str | None:
    """The multiple-choice letter an answer names ("B", "(B) Paris", "The answer is B"); None if there is
    none."""
    for pattern in _CHOICE_PATTERNS:
        found = pattern.search(text)
        if found:
            return found.group(1)
    return None


def normalise_number(text: str) -> str:
    number = final_number(text)
    return number if number is not None else normalise_text(text)


def normalise_choice(text: str) -> str:
    letter = choice_letter(text)
    return letter if letter is not None else normalise_text(text)


def normalise_auto(text: str) -> str:
    """A "####" final number, else a bare choice letter or bare number, else the normalised text."""
    if _FINAL_MARK.search(text):
        return normalise_number(text)
    plain = normalise_text(text)
    if re.fullmatch(r"[a-j]", plain):
        return plain.upper()
    if _NUMBER.fullmatch(text.strip().rstrip(".")):
        return normalise_number(text)
    return plain


NORMALISERS: dict[str, Normaliser] = {
    "auto": normalise_auto,
    "text": normalise_text,
    "number": normalise_number,
    "choice": normalise_choice,
}


def resolve_normaliser(normaliser: NormaliserName | Normaliser) -> Normaliser:
    return NORMALISERS[normaliser] if isinstance(normaliser, str) else normaliser


def answer_key(generation: Generation, normaliser: Normaliser) -> str:
    """The key two answers share when they say the same: tool calls by (name, arguments), text normalised."""
    if generation.tool_calls:
        calls = [[c.name, c.arguments] for c in generation.tool_calls]
        return "tool:" + json.dumps(calls, sort_keys=True, ensure_ascii=False)
    return normaliser(generation.text)


def answer_text(generation: Generation) -> str:
    """A generation as one string for similarity: its text, or its tool calls as JSON."""
    if generation.tool_calls:
        return json.dumps(
            [{"name": c.name, "arguments": c.arguments} for c in generation.tool_calls], sort_keys=True
        )
    return generation.text
