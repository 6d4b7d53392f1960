"""Helpers for strategy tests: members with logprobs or scoring, and call-overlap checks from the trace."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from ensemble_core.members.base import Capability
from ensemble_core.members.scripted import ScriptedMember
from ensemble_core.types import ContinuationScore, Generation, Request, TokenLogprob, Trace


class LogprobMember(ScriptedMember):
    """A scripted member whose answers carry token logprobs of a fixed value."""

    def __init__(self, name: str, script, logprob: float, **kwargs):
        super().__init__(name, script, **kwargs)
        self.logprob = logprob

    async def agenerate(self, request: Request) -> Generation:
        generation = await super().agenerate(request)
        tokens = [TokenLogprob(token=w, logprob=self.logprob) for w in generation.text.split()] or None
        return generation.model_copy(update={"logprobs": tokens})


class ScoringMember(ScriptedMember):
    """A scripted member that can also score: `scorer(prompt, continuation) -> sum logprob`; records the
    pairs."""

    capabilities = frozenset({Capability.GENERATE, Capability.SCORE})

    def __init__(self, name: str, script, scorer: Callable[[str, str], float], **kwargs):
        super().__init__(name, script, **kwargs)
        self.scorer = scorer
        self.scored: list[tuple[str, str]] = []

    def score(self, pairs: Sequence[tuple[str, str]]) -> list[ContinuationScore]:
        self.scored.extend(pairs)
        return [
            ContinuationScore(sum_logprob=self.scorer(p, c), n_tokens=1, n_chars=len(c)) for p, c in pairs
        ]


class Clock:
    """Records when each scripted reply is produced (the end of a member call)."""

    def __init__(self):
        self.ends: dict[str, float] = {}

    def reply(self, name: str, text: str) -> Callable[[Request], str]:
        def answer(request: Request) -> str:
            self.ends[name] = time.perf_counter()
            return text

        return answer

    def overlap(self, trace: Trace, names: Sequence[str]) -> bool:
        """Whether all the named members' calls were in flight at one common moment (start = end -
        latency)."""
        latency = {c.member: c.latency_s for c in trace.calls if c.member in names}
        starts = [self.ends[n] - latency[n] for n in names]
        return max(starts) < min(self.ends[n] for n in names)
