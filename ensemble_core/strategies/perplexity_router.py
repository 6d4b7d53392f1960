"""`PerplexityRouter`: every member scores the prompt it would be given (its own chat template or plain
format), concurrently, and the member that finds it least surprising (lowest perplexity) answers: PackLLM-sim,
top-1.

Perplexity is per character by default: members with different tokenizers spend different numbers of tokens on
the same text (a 262k vocabulary fewer, individually less likely ones), so per-token perplexities are not
comparable across them; per character they are. `per="token"` gives PackLLM's per-token perplexity."""

from __future__ import annotations

import asyncio
from typing import ClassVar, Literal

from pydantic import Field

from ensemble_core.asyncio_bridge import to_thread
from ensemble_core.errors import MemberError
from ensemble_core.members.base import Capability, Member
from ensemble_core.run_context import RunContext
from ensemble_core.strategies.routing import Router, RoutingDecision
from ensemble_core.types import Request


class PerplexityRouter(Router):
    """The member with the lowest perplexity of its own formatted prompt answers; a member whose
    scoring fails (error, timeout, prompt longer than its context) is ranked last and the trace says why."""

    name: ClassVar[str] = "perplexity-router"
    summary: ClassVar[str] = "the member that finds the prompt least surprising (lowest perplexity) answers"
    paper: ClassVar[str | None] = (
        "Mavromatis et al. 2024, Pack of LLMs: Model Fusion at Test-Time via Perplexity Optimization "
        "(arXiv:2404.11531)"
    )
    requires: ClassVar[frozenset[Capability]] = frozenset({Capability.GENERATE, Capability.SCORE})

    members_doc: ClassVar[str] = "names of the members to choose from (or `candidates`); default: all"
    legacy_members_name: ClassVar[str | None] = "candidates"

    per: Literal["char", "token"] = Field(
        default="char", description="perplexity per character (comparable across tokenizers) or per token"
    )

    async def aroute(self, ctx: RunContext, request: Request) -> RoutingDecision:
        candidates = self.participants(list(ctx.members.values()))
        found = await asyncio.gather(*(_perplexity(ctx, member, request, self.per) for member in candidates))
        scores = {m.name: ppl for m, ppl in zip(candidates, found, strict=True) if ppl is not None}
        unscored = [m.name for m, ppl in zip(candidates, found, strict=True) if ppl is None]
        ranking = sorted(scores, key=scores.__getitem__) + unscored
        if scores:
            reason = f"lowest prompt perplexity: {ranking[0]!r} ({scores[ranking[0]]:.2f})"
        else:
            reason = "no member could score the prompt; members are tried in order"
        return RoutingDecision(
            ranking=ranking,
            reason=reason,
            score_name="perplexity",
            scores=scores,
            details={"perplexity_per": self.per, "unscored": unscored},
        )


async def _perplexity(
    ctx: RunContext, member: Member, request: Request, per: Literal["char", "token"]
) -> float | None:
    """exp(-log-probability per character or per token) of the member's own prompt text, or None when scoring
    failed (the failure is in the trace)."""
    prompt = await to_thread(member.format_prompt, request)
    try:
        (score,) = await ctx.score(member, [("", prompt)], role="perplexity")
    except MemberError:
        return None
    return score.perplexity(per)
