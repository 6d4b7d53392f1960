"""`Vote`: majority over normalised answers; with `samples_per_member` above 1, self-consistency."""

from __future__ import annotations

import math
from typing import Any, ClassVar

from pydantic import Field

from ensemble_core.run_context import RunContext
from ensemble_core.scoring.answers import Normaliser, NormaliserName, answer_key, resolve_normaliser
from ensemble_core.strategies.candidates import CandidateStrategy
from ensemble_core.types import Generation, Request, Result


class Vote(CandidateStrategy):
    """Every member answers (concurrently); answers are grouped by their normalised form (tool calls by name
    and arguments) and the largest group wins. Ties go to the group holding the answer with the highest mean
    token log-probability, then to the group answered first in member order; the winner's best-scored answer
    is returned as it was written."""

    name: ClassVar[str] = "vote"
    summary: ClassVar[str] = "majority over normalised answers (self-consistency when sampling)"
    paper: ClassVar[str | None] = (
        "Self-Consistency Improves Chain of Thought Reasoning in Language Models (Wang et al., 2023)"
    )

    normaliser: NormaliserName | Normaliser = Field(
        default="auto",
        description=(
            "how answers are compared: 'text' (lower case, no punctuation), 'number' ('#### 42' or the last "
            "number), 'choice' (a multiple-choice letter), 'auto' ('#### n', a bare letter or number, else "
            "text), or a function str -> str"
        ),
    )

    async def arun(self, ctx: RunContext, request: Request) -> Result:
        answers = await self.gather(ctx, request)
        normalise = resolve_normaliser(self.normaliser)
        groups: dict[str, list[Generation]] = {}
        for answer in answers:
            groups.setdefault(answer_key(answer, normalise), []).append(answer)
        ranked = sorted(
            groups.items(), key=lambda item: (len(item[1]), max(map(_score, item[1]))), reverse=True
        )
        key, winners = ranked[0]
        chosen = max(winners, key=_score)
        tied = [k for k, group in ranked[1:] if len(group) == len(winners)]
        reason = f"{len(winners)} of {len(answers)} answers agree"
        if tied:
            reason += f"; tie with {len(tied)} other answer(s) broken by mean logprob"
        return ctx.result(chosen, reason=reason, votes=_votes(groups), winner=key)


def _score(answer: Generation) -> float:
    """Tie-break score: mean token log-probability, or -inf when the member returned none."""
    return answer.mean_logprob if answer.mean_logprob is not None else -math.inf


def _votes(groups: dict[str, list[Generation]]) -> list[dict[str, Any]]:
    """Each group's normalised answer, size, members and best mean logprob (None without logprobs)."""
    votes = []
    for key, group in groups.items():
        best = max(map(_score, group))
        members = [g.member for g in group]
        votes.append(
            {
                "answer": key,
                "count": len(group),
                "members": members,
                "best_mean_logprob": best if best > -math.inf else None,
            }
        )
    return votes
