"""How surprised each member is by candidate continuations of a partly written answer (span and step fusion).

Each member scores a candidate with its own prompt: its chat template or plain format of the request with the
text so far as the answer's prefill, so every member reads the text exactly as it would have written it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ensemble_core.errors import MemberError
from ensemble_core.members.base import Member
from ensemble_core.run_context import RunContext
from ensemble_core.types import Request


@dataclass
class CandidateScores:
    """Per-member perplexities of each candidate (member -> one per candidate), their weighted mean per
    candidate (lower is better; empty when no member could score), and the members whose scoring failed."""

    perplexity: dict[str, list[float]] = field(default_factory=dict)
    combined: list[float] = field(default_factory=list)
    errors: dict[str, MemberError] = field(default_factory=dict)

    @property
    def best(self) -> int:
        """Index of the candidate with the lowest combined perplexity (the first one on a tie)."""
        return min(range(len(self.combined)), key=self.combined.__getitem__)

    def details(self) -> dict[str, Any]:
        """What a trace records: the perplexities, their mean, and who failed to score."""
        return {"perplexity": self.perplexity, "combined": self.combined, "scoring_failed": list(self.errors)}


def continuation_pair(member: Member, request: Request, prefix: str, candidate: str) -> tuple[str, str]:
    """(prompt, continuation) for `member.score`: the member's own prompt with `prefix` as the answer so far,
    and the candidate as that prompt format continues it (a plain prompt puts a space after "Answer:")."""
    prompt = member.format_prompt(request.with_prefill(prefix))
    full = member.format_prompt(request.with_prefill(prefix + candidate))
    if full.startswith(prompt) and len(full) > len(prompt):
        return prompt, full[len(prompt) :]
    return prompt, candidate


async def score_candidates(
    ctx: RunContext,
    members: Sequence[Member],
    request: Request,
    prefix: str,
    candidates: Sequence[str],
    weights: Mapping[str, float] | None = None,
    role: str = "score",
) -> CandidateScores:
    """Every member scores every candidate, concurrently. Perplexity is per character (exp of minus the
    log-probability over the characters), as in `scoring.perplexity`, so members with different tokenizers are
    on one scale; the combined score is the mean over members weighted by `weights` (default 1 each).
    A member that fails is left out of the mean and its error kept in `errors` (and in the trace)."""

    async def one(member: Member) -> list[float] | MemberError:
        pairs = [continuation_pair(member, request, prefix, c) for c in candidates]
        try:
            scores = await ctx.score(member, pairs, role=role)
        except MemberError as err:
            return err
        return [s.perplexity() for s in scores]

    found = await asyncio.gather(*(one(m) for m in members))
    result = CandidateScores(
        perplexity={
            m.name: ppl for m, ppl in zip(members, found, strict=True) if not isinstance(ppl, MemberError)
        },
        errors={m.name: err for m, err in zip(members, found, strict=True) if isinstance(err, MemberError)},
    )
    if result.perplexity:
        weight = {name: 1.0 if weights is None else weights.get(name, 0.0) for name in result.perplexity}
        if not any(weight.values()):  # only zero-weight members could score: count them equally
            weight = dict.fromkeys(weight, 1.0)
        total = sum(weight.values())
        result.combined = [
            sum(weight[name] * ppl[i] for name, ppl in result.perplexity.items()) / total
            for i in range(len(candidates))
        ]
    return result
