"""Accuracy statistics (Wilson intervals, McNemar's exact test, paired bootstrap) and answer matching for
generated text (exact, numeric, first word, multiple-choice letter or choice text)."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict

from ensemble_core.eval.items import AnswerItem, ChoiceItem
from ensemble_core.scoring.answers import choice_letter, final_number, normalise_text

Z95 = 1.959963984540054


def wilson_interval(correct: int, total: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval for a proportion (sound near 0 and 1, unlike the normal approximation)."""
    if total <= 0:
        return (0.0, 1.0)
    p = correct / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


class PairedComparison(BaseModel):
    """A against B on the same items: the accuracy gain, its bootstrap 95% interval, and McNemar's p-value."""

    model_config = ConfigDict(extra="forbid")

    a: str
    b: str
    n: int
    gain: float
    ci_low: float
    ci_high: float
    a_only: int
    b_only: int
    p_value: float

    @property
    def significant(self) -> bool:
        return self.ci_low > 0 or self.ci_high < 0


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar p-value: a binomial test on the items exactly one of the two got right."""
    n = a_only + b_only
    if n == 0:
        return 1.0
    k = min(a_only, b_only)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired_bootstrap(
    a: Sequence[bool], b: Sequence[bool], *, samples: int = 10_000, seed: int = 0
) -> tuple[float, float]:
    """95% interval of accuracy(a) - accuracy(b), resampling items with replacement (seeded)."""
    diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if diff.size == 0:
        return (0.0, 0.0)
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, diff.size, size=(samples, diff.size))].mean(axis=1)
    low, high = np.quantile(means, [0.025, 0.975])
    return (float(low), float(high))


def compare(
    a_name: str, a: Sequence[bool], b_name: str, b: Sequence[bool], *, seed: int = 0
) -> PairedComparison:
    """Paired comparison of two strategies' per-item correctness (same items, same order)."""
    if len(a) != len(b):
        raise ValueError(f"paired comparison needs the same items: {len(a)} vs {len(b)}")
    a_only = sum(1 for x, y in zip(a, b, strict=True) if x and not y)
    b_only = sum(1 for x, y in zip(a, b, strict=True) if y and not x)
    low, high = paired_bootstrap(a, b, seed=seed)
    return PairedComparison(
        a=a_name,
        b=b_name,
        n=len(a),
        gain=(sum(a) - sum(b)) / max(len(a), 1),
        ci_low=low,
        ci_high=high,
        a_only=a_only,
        b_only=b_only,
        p_value=mcnemar_exact(a_only, b_only),
    )


_WORD = re.compile(r"[\w'-]+")


def first_line(text: str) -> str:
    return next((line for line in text.strip().splitlines() if line.strip()), "")


def answer_correct(item: AnswerItem, text: str) -> bool:
    """Numeric: the final number equals the answer. First word: the first generated word is the answer
    (punctuation and case aside). Exact: an alias equals the first line, or appears in it as whole words."""
    if item.match == "numeric":
        predicted = final_number(text)
        return predicted is not None and any(predicted == final_number(a) for a in item.answers)
    if item.match == "first-word":
        words = _WORD.findall(text)
        return bool(words) and any(normalise_text(words[0]) == normalise_text(a) for a in item.answers)
    said = normalise_text(first_line(text))
    if not said:
        return False
    for answer in item.answers:
        alias = normalise_text(answer)
        if alias and (said == alias or re.search(rf"(?<!\w){re.escape(alias)}(?!\w)", said)):
            return True
    return False


def choice_from_text(item: ChoiceItem, text: str) -> int | None:
    """Which choice a generated answer names, from its first line (a base model runs on into new "Answer:"
    lines): its letter ("B", "(B)", "Answer: B"), else the one choice whose text it contains; None when it
    names none or several."""
    text = first_line(text)
    letter = choice_letter(text)
    if letter is not None and "ABCDEFGHIJ".index(letter) < len(item.choices):
        return "ABCDEFGHIJ".index(letter)
    said = normalise_text(text)
    named = [k for k, c in enumerate(item.choices) if normalise_text(c) and normalise_text(c) in said]
    return named[0] if len(named) == 1 else None
