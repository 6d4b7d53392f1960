"""`MixtureOfAgents` (Wang et al. 2024): layers of proposers, each layer after the first seeing the previous
layer's answers as quoted references, then an aggregator member that writes the final answer from the last
layer's answers. The references are untrusted data (quoted between markers a reference cannot forge)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import ClassVar

from pydantic import Field

from ensemble_core.errors import MemberError
from ensemble_core.members.base import Member, generation_to_deltas
from ensemble_core.run_context import RunContext
from ensemble_core.scoring.answers import answer_text
from ensemble_core.scoring.prompts import with_references
from ensemble_core.strategies.base import Strategy, resolve_member
from ensemble_core.strategies.streaming import FailedBeforeFirstToken, stream_or_fail_early
from ensemble_core.types import Delta, Generation, Request, Result


class MixtureOfAgents(Strategy):
    """Every proposer answers; in each further layer every proposer answers again with the previous layer's
    answers as references; the aggregator answers with the last layer's as references (its tokens stream
    live). A proposer that fails is left out of its layer; if the aggregator fails before its first token,
    the first answer of the last layer is returned (the trace says so). A tool call among the last layer's
    answers, when the aggregator answers in prose, is dropped; the aggregator sees the request's tools."""

    name: ClassVar[str] = "mixture-of-agents"
    summary: ClassVar[str] = (
        "layers of proposers refine on each other's answers; an aggregator writes the answer"
    )
    paper: ClassVar[str | None] = (
        "Wang et al. 2024, Mixture-of-Agents Enhances Large Language Model Capabilities (arXiv:2406.04692)"
    )
    members_doc: ClassVar[str] = "names of the proposers; default: all members"

    layers: int = Field(default=1, ge=1, le=4, description="proposer layers before the aggregator")
    aggregator: str | None = Field(
        default=None, description="the member that writes the final answer; default: the last member"
    )

    def role_members(self, members: Sequence[Member]) -> list[Member]:
        return [self._aggregator(members)]

    def _aggregator(self, members: Sequence[Member]) -> Member:
        if self.aggregator is not None:
            return resolve_member(members, self.aggregator, "mixture-of-agents.aggregator")
        return list(members)[-1]

    async def _propose(self, ctx: RunContext, request: Request) -> list[Generation]:
        proposers = self.participants(list(ctx.members.values()))
        references: list[Generation] = []
        for layer in range(self.layers):
            asked = with_references(request, [answer_text(g) for g in references]) if references else request
            references, _ = await ctx.generate_all(proposers, [asked], role=f"propose (layer {layer + 1})")
        return references

    async def arun(self, ctx: RunContext, request: Request) -> Result:
        proposals = await self._propose(ctx, request)
        aggregator = self._aggregator(list(ctx.members.values()))
        try:
            answer = await ctx.generate(
                aggregator, _aggregate(request, proposals), role="aggregate", require_answer=True
            )
        except MemberError as err:
            return ctx.result(proposals[0], reason=f"the aggregator failed ({err}): the first proposal")
        return ctx.result(
            answer, reason=_reason(aggregator, proposals, self.layers), proposals=_names(proposals)
        )

    async def astream(self, ctx: RunContext, request: Request) -> AsyncIterator[Delta]:
        proposals = await self._propose(ctx, request)
        aggregator = self._aggregator(list(ctx.members.values()))
        try:
            async for delta in stream_or_fail_early(
                ctx, aggregator, _aggregate(request, proposals), "aggregate", require_answer=True
            ):
                yield delta
        except FailedBeforeFirstToken as failed:
            first = proposals[0]
            for delta in generation_to_deltas(first):
                if not delta.final:
                    yield delta
            yield ctx.final_delta(
                first.member, reason=f"the aggregator failed ({failed.error}): the first proposal"
            )
            return
        yield ctx.final_delta(
            aggregator.name, reason=_reason(aggregator, proposals, self.layers), proposals=_names(proposals)
        )


def _aggregate(request: Request, proposals: Sequence[Generation]) -> Request:
    return with_references(request, [answer_text(g) for g in proposals])


def _names(generations: Sequence[Generation]) -> list[str]:
    return [g.member for g in generations]


def _reason(aggregator: Member, proposals: Sequence[Generation], layers: int) -> str:
    return f"{aggregator.name!r} aggregated {len(proposals)} proposals after {layers} layer(s)"
