"""`Router`: the shared base of the routing strategies. A router ranks the members before inference; the first
answers alone, and if it fails the next in the ranking answers instead, so a request is never lost. Tool calls
and tool messages pass through untouched: the chosen member sees the request as it came."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import AsyncIterator, Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ensemble_core.errors import AllMembersFailedError, MemberError
from ensemble_core.members.base import Member
from ensemble_core.run_context import RunContext
from ensemble_core.scoring.conversation import embed_conversations
from ensemble_core.scoring.embeddings import EmbedFn, default_embed
from ensemble_core.strategies.base import Strategy
from ensemble_core.strategies.streaming import FailedBeforeFirstToken, stream_or_fail_early
from ensemble_core.types import Delta, Message, Request, Result


class RoutingDecision(BaseModel):
    """A router's choice: the members best first, why, and the scores behind it (written to the trace)."""

    model_config = ConfigDict(extra="forbid")

    ranking: list[str] = Field(min_length=1, description="member names, best first; the rest are fallbacks")
    reason: str
    score_name: str = Field(default="scores", description="what the scores are, e.g. 'perplexity'")
    scores: dict[str, float] = Field(default_factory=dict)
    details: dict[str, Any] = Field(default_factory=dict)


class Router(Strategy):
    """One member answers, chosen before inference by `aroute`; failures fall back down the ranking."""

    @abstractmethod
    async def aroute(self, ctx: RunContext, request: Request) -> RoutingDecision:
        """Rank the members that may answer this request, best first."""

    def _order(self, ctx: RunContext, decision: RoutingDecision) -> list[Member]:
        """The ranking, then any other member this router may use (so even a short ranking never loses the
        request)."""
        usable = self.members_used(list(ctx.members.values()))
        ranked = [ctx.member(name) for name in decision.ranking]
        return ranked + [m for m in usable if m.name not in decision.ranking]

    async def arun(self, ctx: RunContext, request: Request) -> Result:
        decision = await self.aroute(ctx, request)
        errors: dict[str, BaseException] = {}
        for member in self._order(ctx, decision):
            try:
                generation = await ctx.generate(member, request, role="answer", require_answer=True)
            except MemberError as err:
                errors[member.name] = err.__cause__ or err
                continue
            return ctx.result(generation, _reason(decision, member, errors), **_details(decision, errors))
        raise AllMembersFailedError(errors)

    async def astream(self, ctx: RunContext, request: Request) -> AsyncIterator[Delta]:
        """Streams the chosen member's tokens; falls back only before the first token (after that a failure
        ends the stream with the error rather than splicing two answers)."""
        decision = await self.aroute(ctx, request)
        errors: dict[str, BaseException] = {}
        for member in self._order(ctx, decision):
            try:
                async for delta in stream_or_fail_early(ctx, member, request, "answer", require_answer=True):
                    yield delta
            except FailedBeforeFirstToken as failed:
                errors[member.name] = failed.error.__cause__ or failed.error
                continue
            yield ctx.final_delta(
                member.name, _reason(decision, member, errors), **_details(decision, errors)
            )
            return
        raise AllMembersFailedError(errors)


class EmbeddingRouter(Router):
    """A router that reads a conversation as one embedding: its newest user turns, recent ones weighing more,
    so a follow-up question is routed with its thread."""

    recency_decay: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description="weight of each older user turn relative to the next (0: last only)",
    )
    max_turns: int = Field(default=4, ge=1, description="how many of the newest user turns are embedded")
    embed: EmbedFn | None = Field(
        default=None, exclude=True, description="texts -> [n, d] array; default: packaged all-MiniLM-L6-v2"
    )

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray((self.embed or default_embed)(texts), dtype=np.float64)

    def embed_conversations(self, conversations: Sequence[Sequence[Message]]) -> np.ndarray:
        """One unit vector per conversation (see `scoring.conversation.embed_conversations`)."""
        return embed_conversations(
            conversations, self.embed or default_embed, decay=self.recency_decay, max_turns=self.max_turns
        )


def _reason(decision: RoutingDecision, member: Member, errors: dict[str, BaseException]) -> str:
    if not errors:
        return decision.reason
    return (
        f"{decision.reason}; {', '.join(map(repr, errors))} failed, so {member.name!r} (next best) answered"
    )


def _details(decision: RoutingDecision, errors: dict[str, BaseException]) -> dict[str, Any]:
    return {
        "ranking": decision.ranking,
        decision.score_name: decision.scores,
        "failed": {name: f"{type(err).__name__}: {err}" for name, err in errors.items()},
        **decision.details,
    }
