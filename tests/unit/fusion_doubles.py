"""Test doubles for span and step fusion: scripted members that continue a fixed answer from any prefill and
score continuations with a given function."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ensemble_core.members.base import Capability
from ensemble_core.members.scripted import ScriptedMember
from ensemble_core.types import ContinuationScore, Request

# log-probability per character of `continuation` after `prompt`
CharLogprob = Callable[[str, str], float]


class ScoringMember(ScriptedMember):
    """A scripted member that can also score: `logprob(prompt, continuation)` per character (default -1)."""

    capabilities = frozenset({Capability.GENERATE, Capability.SCORE})

    def __init__(self, name: str, script, *, logprob: CharLogprob | None = None, **kwargs):
        super().__init__(name, script, **kwargs)
        self.logprob = logprob or (lambda prompt, continuation: -1.0)
        self.scored: list[tuple[str, str]] = []

    def score(self, pairs: Sequence[tuple[str, str]]) -> list[ContinuationScore]:
        self.scored.extend(pairs)
        return [
            ContinuationScore(
                sum_logprob=self.logprob(p, c) * len(c), n_tokens=max(1, len(c.split())), n_chars=len(c)
            )
            for p, c in pairs
        ]


def continuing(answer: str, otherwise: str = "") -> Callable[[Request], str]:
    """A script that continues `answer` from the request's prefill, or says `otherwise` once it has diverged
    (by default nothing: it yields). Scripted members ignore max_tokens: the strategy cuts their proposals."""

    def reply(request: Request) -> str:
        return answer[len(request.prefill) :] if answer.startswith(request.prefill) else otherwise

    return reply


def prefers(word: str, good: float = -0.1, bad: float = -3.0) -> CharLogprob:
    """Scores continuations that contain `word` as likely and all others as unlikely."""
    return lambda prompt, continuation: good if word in continuation else bad
