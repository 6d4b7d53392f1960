"""Test doubles for span and step fusion: scripted members that continue a fixed answer from any prefill, and
score continuations with a given function (the `ScoringMember` of the strategy helpers)."""

from __future__ import annotations

from collections.abc import Callable

from ensemble_core.types import Request
from tests.unit.strategy_helpers import ScoringMember

# sum log-probability of `continuation` after `prompt`
Scorer = Callable[[str, str], float]


def neutral(prompt: str, continuation: str) -> float:
    """Every character equally likely: all candidates tie, so the first proposal wins."""
    return -float(len(continuation))


def scoring(name: str, script, scorer: Scorer = neutral) -> ScoringMember:
    """A scripted member that can also score, by default without preferences."""
    return ScoringMember(name, script, scorer=scorer)


def continuing(answer: str, otherwise: str = "") -> Callable[[Request], str]:
    """A script that continues `answer` from the request's prefill, or says `otherwise` once it has diverged
    (by default nothing: it yields). Scripted members ignore max_tokens: the strategy cuts their proposals."""

    def reply(request: Request) -> str:
        return answer[len(request.prefill) :] if answer.startswith(request.prefill) else otherwise

    return reply


def prefers(word: str, good: float = -0.1, bad: float = -3.0) -> Scorer:
    """Continuations that contain `word` are likely (`good` per character), all others unlikely (`bad`)."""
    return lambda prompt, continuation: (good if word in continuation else bad) * len(continuation)
