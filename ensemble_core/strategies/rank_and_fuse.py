"""`RankAndFuse` (LLM-Blender): every member answers; a pairwise ranker orders the candidates; the best is
returned, or the top k go to a fuser member that writes one answer from them."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from ensemble_core.asyncio_bridge import to_thread
from ensemble_core.errors import ConfigError, MemberError
from ensemble_core.members.base import Capability, Member, generation_to_deltas
from ensemble_core.run_context import RunContext
from ensemble_core.scoring.answers import answer_text
from ensemble_core.scoring.judges import pairwise_preferences
from ensemble_core.scoring.prompts import fusion_request
from ensemble_core.strategies.base import Strategy, resolve_member
from ensemble_core.strategies.streaming import FailedBeforeFirstToken, stream_or_fail_early
from ensemble_core.types import Delta, Generation, Request, Result

PairwiseRanker = Callable[[str, str, Request], Any]
"""(candidate a, candidate b, request) -> P(a is better than b), sync or async."""

Aggregation = Literal["max_logits", "max_wins", "bubble"]


class RankAndFuse(Strategy):
    """Candidates from every member concurrently; a judge member (P("A") against P("B"), both orders) or any
    pairwise ranker compares them; `max_logits` / `max_wins` compare every pair, `bubble` only n - 1 per top
    place. Without a fuser the best candidate is the answer; with one, the top k text candidates are fused.
    A best candidate that is a tool call is returned intact, never fused into prose."""

    name: ClassVar[str] = "rank-and-fuse"
    summary: ClassVar[str] = "pairwise-rank every member's answer, then return the best or fuse the top k"
    paper: ClassVar[str | None] = (
        "LLM-Blender: Ensembling Large Language Models with Pairwise Ranking and Generative Fusion (Jiang et "
        "al., 2023)"
    )

    members_doc: ClassVar[str] = (
        "names of the members whose answers are the candidates (or `candidates`); default: all"
    )
    legacy_members_name: ClassVar[str | None] = "candidates"

    judge: str | None = Field(
        default=None,
        description="name of the member that judges pairs (needs the score capability); default: the first "
        "member that can score, unless a ranker is given",
    )
    ranker: PairwiseRanker | None = Field(
        default=None,
        exclude=True,
        description="a function (a, b, request) -> P(a better than b), instead of a judge",
    )
    aggregation: Aggregation = Field(
        default="max_logits",
        description="max_logits (sum of log-odds over all pairs), max_wins (pairs won), or bubble (n - 1 "
        "comparisons per top place)",
    )
    fuser: str | None = Field(
        default=None, description="name of the member that fuses the top k; None: rank only"
    )
    top_k: int = Field(default=3, ge=1, le=16, description="how many of the best candidates the fuser reads")

    def _judge(self, members: Sequence[Member]) -> Member | None:
        if self.ranker is not None:
            return None
        if self.judge is not None:
            return resolve_member(members, self.judge, "rank-and-fuse.judge")
        scorers = [m for m in self.participants(members) if m.has(Capability.SCORE)]
        if not scorers:
            raise ConfigError(
                "rank-and-fuse needs a judge: no member can score; name a member with the score capability "
                "in judge=, or pass ranker=(a, b, request) -> P(a better)"
            )
        return scorers[0]

    def role_members(self, members: Sequence[Member]) -> list[Member]:
        fuser = [resolve_member(members, self.fuser, "rank-and-fuse.fuser")] if self.fuser is not None else []
        judge = self._judge(members)
        return [*fuser, *([judge] if judge is not None else [])]

    def check(self, members: Mapping[str, Member]) -> None:
        listed = list(members.values())
        for member in self.participants(listed):
            member.require(Capability.GENERATE, "rank-and-fuse (a candidate)")
        if self.fuser is not None:
            resolve_member(listed, self.fuser, "rank-and-fuse.fuser").require(
                Capability.GENERATE, "the fuser"
            )
        judge = self._judge(listed)
        if judge is not None:
            judge.require(Capability.SCORE, "the rank-and-fuse judge")

    # answering
    # ------------------------------------------------------------------------------------------------
    async def arun(self, ctx: RunContext, request: Request) -> Result:
        ranked, details = await self._rank(ctx, request)
        best = ranked[0]
        to_fuse = self._to_fuse(ranked)
        if not to_fuse or self.fuser is None:
            return ctx.result(best, reason=_best_reason(best, details), **details)
        fuser = ctx.member(self.fuser)
        try:
            fused = await ctx.generate(fuser, fusion_request(request, to_fuse), role="fuser")
        except MemberError as err:
            return ctx.result(best, reason=f"the fuser failed ({err}): best-ranked candidate", **details)
        return ctx.result(
            fused, reason=f"fused the top {len(to_fuse)} candidates", fused_from=_names(to_fuse), **details
        )

    async def astream(self, ctx: RunContext, request: Request) -> AsyncIterator[Delta]:
        """Ranking needs every candidate, so nothing streams before it; then the fuser's tokens stream live
        (or the best candidate at once, when there is nothing to fuse or the fuser fails before its first
        token)."""
        ranked, details = await self._rank(ctx, request)
        best = ranked[0]
        to_fuse = self._to_fuse(ranked)
        if to_fuse and self.fuser is not None:
            try:
                fusing = fusion_request(request, to_fuse)
                async for delta in stream_or_fail_early(ctx, ctx.member(self.fuser), fusing, "fuser"):
                    yield delta
            except FailedBeforeFirstToken as failed:
                details["fuser_error"] = str(failed.error)
            else:
                yield ctx.final_delta(
                    self.fuser,
                    reason=f"fused the top {len(to_fuse)} candidates",
                    fused_from=_names(to_fuse),
                    **details,
                )
                return
        for delta in generation_to_deltas(best):
            if not delta.final:
                yield delta
        yield ctx.final_delta(best.member, reason=_best_reason(best, details), **details)

    def _to_fuse(self, ranked: list[Generation]) -> list[Generation]:
        """The top-k text candidates, when fusing applies: a fuser is set, the best is not a tool call, and
        there are at least two texts to merge."""
        if self.fuser is None or ranked[0].tool_calls:
            return []
        texts = [g for g in ranked[: self.top_k] if not g.tool_calls]
        return texts if len(texts) > 1 else []

    async def _rank(self, ctx: RunContext, request: Request) -> tuple[list[Generation], dict[str, Any]]:
        """Candidates, best first, and the trace details (scores, comparisons). A failing judge leaves the
        candidates in member order and says so."""
        members = list(ctx.members.values())
        candidates, _ = await ctx.generate_all(self.participants(members), [request], role="candidate")
        details: dict[str, Any] = {"candidates": _names(candidates), "aggregation": self.aggregation}
        if len(candidates) == 1:
            return candidates, details
        compare = _Comparer(
            ctx, request, [answer_text(c) for c in candidates], self._judge(members), self.ranker
        )
        try:
            order, scores = await rank(compare, len(candidates), self.aggregation, self.top_k)
        except MemberError as err:
            details["ranking_error"] = str(err)
            return candidates, details
        details.update(
            scores=[round(s, 4) for s in scores],
            comparisons=compare.count,
            ranking=[candidates[i].member for i in order],
        )
        return [candidates[i] for i in order], details


class _Comparer:
    """P(candidate i better than candidate j) for batches of index pairs, each pair judged in both orders."""

    def __init__(
        self,
        ctx: RunContext,
        request: Request,
        texts: list[str],
        judge: Member | None,
        ranker: PairwiseRanker | None,
    ):
        self.ctx, self.request, self.texts, self.judge, self.ranker = ctx, request, texts, judge, ranker
        self.count = 0

    async def __call__(self, pairs: Sequence[tuple[int, int]]) -> list[float]:
        self.count += len(pairs)
        texts = [(self.texts[i], self.texts[j]) for i, j in pairs]
        if self.judge is not None:
            return await pairwise_preferences(self.ctx, self.judge, self.request, texts)
        forward = asyncio.gather(*(self._ranked(a, b) for a, b in texts))
        backward = asyncio.gather(*(self._ranked(b, a) for a, b in texts))
        ab, ba = await asyncio.gather(forward, backward)
        return [(p + 1.0 - q) / 2 for p, q in zip(ab, ba, strict=True)]

    async def _ranked(self, a: str, b: str) -> float:
        """An async ranker is awaited; a sync one (a reward model, say) runs in a worker thread."""
        assert self.ranker is not None
        if inspect.iscoroutinefunction(self.ranker):
            return float(await self.ranker(a, b, self.request))
        return float(await to_thread(self.ranker, a, b, self.request))


async def rank(
    compare: Callable[[Sequence[tuple[int, int]]], Awaitable[list[float]]],
    n: int,
    aggregation: Aggregation,
    top_k: int,
) -> tuple[list[int], list[float]]:
    """Candidate indices best first, and each candidate's aggregate score (for bubble: places from the
    top)."""
    if aggregation == "bubble":
        remaining, top = list(range(n)), []
        for _ in range(min(top_k, n - 1)):
            best = remaining[0]
            for challenger in remaining[1:]:
                if (await compare([(best, challenger)]))[0] < 0.5:
                    best = challenger
            top.append(best)
            remaining.remove(best)
        order = top + remaining
        return order, [float(n - order.index(i)) for i in range(n)]
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    preferences = np.full((n, n), 0.5)
    for (i, j), p in zip(pairs, await compare(pairs), strict=True):
        preferences[i, j], preferences[j, i] = p, 1.0 - p
    np.fill_diagonal(preferences, 0.5)
    if aggregation == "max_logits":
        clipped = np.clip(preferences, 1e-6, 1 - 1e-6)
        scores = np.log(clipped / (1 - clipped)).sum(axis=1)
    else:
        scores = (preferences > 0.5).sum(axis=1) + 0.5 * ((preferences == 0.5).sum(axis=1) - 1)
    order = sorted(range(n), key=lambda i: -scores[i])
    return order, [float(s) for s in scores]


def _names(generations: Sequence[Generation]) -> list[str]:
    return [g.member for g in generations]


def _best_reason(best: Generation, details: dict[str, Any]) -> str:
    if len(details["candidates"]) == 1:
        return f"only {best.member!r} answered"
    if "ranking_error" in details:
        return f"ranking failed ({details['ranking_error']}): first candidate in member order"
    return f"{best.member!r} ranked best by {details['aggregation']}"
