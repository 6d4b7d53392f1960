"""Interval and test statistics against textbook values; answer matching as a reader would judge it."""

from __future__ import annotations

import pytest

from ensemble_core.eval.items import AnswerItem, ChoiceItem
from ensemble_core.eval.metrics import (
    answer_correct,
    choice_from_text,
    compare,
    mcnemar_exact,
    paired_bootstrap,
    wilson_interval,
)


def test_wilson_matches_the_textbook_values():
    low, high = wilson_interval(50, 100)
    assert low == pytest.approx(0.4038, abs=1e-4) and high == pytest.approx(0.5962, abs=1e-4)
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-4)
    low, high = wilson_interval(10, 10)
    assert high == pytest.approx(1.0) and low == pytest.approx(0.7225, abs=1e-4)


def test_wilson_narrows_with_more_items():
    small = wilson_interval(30, 40)
    large = wilson_interval(300, 400)
    assert small[1] - small[0] > large[1] - large[0]
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_mcnemar_exact_binomial():
    assert mcnemar_exact(0, 6) == pytest.approx(2 / 64)
    assert mcnemar_exact(5, 5) == 1.0
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(10, 2) == pytest.approx(mcnemar_exact(2, 10))


def test_paired_bootstrap_is_seeded_and_brackets_the_gain():
    a = [True] * 70 + [False] * 30
    b = [True] * 50 + [False] * 50
    first = paired_bootstrap(a, b, seed=3)
    assert first == paired_bootstrap(a, b, seed=3)
    assert first[0] < 0.2 < first[1] and first[0] > 0


def test_compare_counts_discordant_items():
    a = [True, True, False, True, False]
    b = [True, False, False, False, True]
    result = compare("ens", a, "best", b)
    assert (result.a_only, result.b_only) == (2, 1)
    assert result.gain == pytest.approx(0.2)
    assert not result.significant
    with pytest.raises(ValueError):
        compare("x", [True], "y", [True, False])


@pytest.mark.parametrize(
    ("match", "answers", "text", "expected"),
    [
        ("numeric", ["18"], "She makes 9 * 2 = 18 dollars.\n#### 18", True),
        ("numeric", ["1000"], "The total is 1,000.", True),
        ("numeric", ["18"], "It is 17.", False),
        ("first-word", ["Shane"], " Shane, she said.", True),
        ("first-word", ["signs"], "the signs", False),
        ("exact", ["Onion", "Allium cepa"], "The onion.\nMore text", True),
        ("exact", ["Horse"], "A horse", True),
        ("exact", ["Horse"], "Seahorses", False),
        ("exact", ["Paris"], "", False),
    ],
)
def test_answer_matching(match, answers, text, expected):
    item = AnswerItem(id="0", question="q", answers=answers, match=match)
    assert answer_correct(item, text) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("B", 1),
        ("The answer is C.", 2),
        ("(A) red", 0),
        ("green", 1),
        ("red or green", None),
        ("E", None),
        ("", None),
        (" C\nAnswer: B\nAnswer:", 2),
    ],
)
def test_choice_from_generated_text(text, expected):
    item = ChoiceItem(id="0", question="Colour?", choices=["red", "green", "blue"], gold=1)
    assert choice_from_text(item, text) == expected
