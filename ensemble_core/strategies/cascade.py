"""`Cascade` (FrugalGPT, AutoMix): the cheapest member answers first; while its confidence is under the step's
threshold, the next member is asked. The last member is never escalated from, so its answer streams live."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field, SerializeAsAny, field_validator

from ensemble_core.asyncio_bridge import run_sync
from ensemble_core.errors import AllMembersFailedError, ConfigError, EnsembleError, MemberError
from ensemble_core.members.base import Member, generation_to_deltas
from ensemble_core.run_context import RunContext
from ensemble_core.scoring.confidence import ConfidenceScorer, MeanLogprob, to_scorer
from ensemble_core.strategies.base import Strategy, resolve_member
from ensemble_core.strategies.cascade_calibration import (
    CascadeRecord,
    CostKind,
    MemberOutcome,
    choose_point,
    frontier,
)
from ensemble_core.strategies.operating_point import OperatingPoint
from ensemble_core.strategies.streaming import FailedBeforeFirstToken, stream_or_fail_early
from ensemble_core.types import Delta, Generation, Request, Result


class CascadeStep(BaseModel):
    """One step of a cascade as the trace shows it: who answered, the score, the threshold, the decision,
    why."""

    member: str
    decision: Literal["accepted", "escalated", "failed", "final"]
    score: float | None = None
    threshold: float | None = None
    why: str


class Cascade(Strategy):
    """Ask members cheapest first; accept an answer when its confidence score reaches the step's threshold,
    else escalate. A member that fails escalates too; if the last member fails, the most confident earlier
    answer is returned (the trace says so)."""

    name: ClassVar[str] = "cascade"
    summary: ClassVar[str] = "cheapest member first; escalate while its confidence is under a threshold"
    paper: ClassVar[str | None] = (
        "FrugalGPT (Chen et al., 2023); AutoMix: Automatically Mixing Language Models (Madaan et al., 2023)"
    )

    members_doc: ClassVar[str] = (
        "member names, cheapest first (or `order`); default: all members sorted by price per token (stable, "
        "so local models keep their listed order)"
    )
    legacy_members_name: ClassVar[str | None] = "order"

    scorer: SerializeAsAny[ConfidenceScorer] = Field(
        default_factory=MeanLogprob,
        description="confidence scorer: 'mean-logprob', 'self-verify', 'agreement' (or {kind: ..., params}), "
        "or a ConfidenceScorer instance",
    )
    thresholds: list[float] | None = Field(
        default=None,
        description="one per step except the last; a step's answer is accepted when its score >= its "
        "threshold; "
        "default: the scorer's default threshold at every step (use calibrate() to pick them from a dev set)",
    )

    @field_validator("scorer", mode="before")
    @classmethod
    def _scorer(cls, value: Any) -> Any:
        return to_scorer(value)

    def default_participants(self, members: Sequence[Member]) -> list[Member]:
        return sorted(members, key=lambda m: m.price.input_per_token + m.price.output_per_token)

    def role_members(self, members: Sequence[Member]) -> list[Member]:
        return [
            resolve_member(members, name, f"cascade.scorer ({self.scorer.kind})")
            for name in self.scorer.helpers()
        ]

    def check(self, members: Mapping[str, Member]) -> None:
        super().check(members)
        order = self.participants(list(members.values()))
        for member in dict.fromkeys(members[self.scorer.judge_of(m.name)] for m in order[:-1]):
            for capability in sorted(self.scorer.requires, key=lambda c: c.value):
                member.require(capability, f"the cascade's {self.scorer.kind!r} scorer")
        if self.thresholds is not None and len(self.thresholds) != len(order) - 1:
            raise ConfigError(
                f"cascade.thresholds: {len(self.thresholds)} given for {len(order)} members; give one per "
                f"step except the last ({len(order) - 1}), in the order {[m.name for m in order]}"
            )

    def step_thresholds(self, n_members: int) -> list[float]:
        return (
            self.thresholds
            if self.thresholds is not None
            else [self.scorer.default_threshold] * (n_members - 1)
        )

    # answering
    # ------------------------------------------------------------------------------------------------
    async def arun(self, ctx: RunContext, request: Request) -> Result:
        walk = await self._escalate(ctx, request)
        if walk.accepted is not None:
            return ctx.result(walk.accepted, reason=walk.reason(), steps=walk.dump())
        last = walk.order[-1]
        try:
            generation = await ctx.generate(last, request, role="final", require_answer=True)
        except MemberError as err:
            walk.failed(last, err)
            return ctx.result(walk.fallback(), reason=walk.reason(), steps=walk.dump())
        walk.steps.append(
            CascadeStep(member=last.name, decision="final", why="the last member is never escalated from")
        )
        return ctx.result(generation, reason=walk.reason(), steps=walk.dump())

    async def astream(self, ctx: RunContext, request: Request) -> AsyncIterator[Delta]:
        """An earlier member's answer cannot stream before it is scored: it is generated, scored, then
        streamed if accepted. The last member's tokens stream live; if it fails before its first token, the
        most confident earlier answer is streamed instead."""
        walk = await self._escalate(ctx, request)
        if walk.accepted is not None:
            for delta in _body(walk.accepted):
                yield delta
            yield ctx.final_delta(walk.accepted.member, reason=walk.reason(), steps=walk.dump())
            return
        last = walk.order[-1]
        try:
            async for delta in stream_or_fail_early(ctx, last, request, "final", require_answer=True):
                yield delta
        except FailedBeforeFirstToken as failed:
            walk.failed(last, failed.error)
            fallback = walk.fallback()
            for delta in _body(fallback):
                yield delta
            yield ctx.final_delta(fallback.member, reason=walk.reason(), steps=walk.dump())
            return
        walk.steps.append(
            CascadeStep(member=last.name, decision="final", why="the last member is never escalated from")
        )
        yield ctx.final_delta(last.name, reason=walk.reason(), steps=walk.dump())

    async def _escalate(self, ctx: RunContext, request: Request) -> _Walk:
        """Every step but the last: generate, score, accept or escalate."""
        order = self.participants(list(ctx.members.values()))
        walk = _Walk(order)
        for member, threshold in zip(order[:-1], self.step_thresholds(len(order)), strict=True):
            try:
                generation = await ctx.generate(member, request, role="attempt", require_answer=True)
            except MemberError as err:
                walk.failed(member, err)
                continue
            try:
                score = await self.scorer.confidence(ctx, member, request, generation)
            except EnsembleError as err:
                walk.steps.append(
                    CascadeStep(
                        member=member.name, decision="escalated", threshold=threshold, why=f"no score: {err}"
                    )
                )
                walk.rejected.append((generation, -math.inf))
                continue
            ctx.annotate(generation, score=score)
            if score >= threshold:
                walk.steps.append(
                    CascadeStep(
                        member=member.name,
                        decision="accepted",
                        score=score,
                        threshold=threshold,
                        why=f"score {score:.4g} >= threshold {threshold:.4g}",
                    )
                )
                walk.accepted = generation
                return walk
            walk.steps.append(
                CascadeStep(
                    member=member.name,
                    decision="escalated",
                    score=score,
                    threshold=threshold,
                    why=f"score {score:.4g} < threshold {threshold:.4g}",
                )
            )
            walk.rejected.append((generation, score))
        return walk

    # calibration
    # ------------------------------------------------------------------------------------------------
    async def arecord(
        self, members: Sequence[Member], request: Request, quality: Callable[[Generation], float]
    ) -> CascadeRecord:
        """One dev-set record: every member in cascade order answers `request` (concurrently) and is scored
        (all but the last); `quality(answer)` grades it. Costs include the scorer's calls."""
        order = self.participants(members)

        async def outcome(member: Member, scored: bool) -> MemberOutcome:
            ctx = RunContext({m.name: m for m in members}, self.name)
            score: float | None = None
            value = 0.0
            try:
                generation = await ctx.generate(member, request, role="attempt", require_answer=True)
                value = float(quality(generation))
                if scored:
                    score = await self.scorer.confidence(ctx, member, request, generation)
            except EnsembleError:
                pass
            latency = sum(c.latency_s for c in ctx.trace.calls)
            cpu = sum(c.cpu_s or 0.0 for c in ctx.trace.calls)
            return MemberOutcome(
                score=score, quality=value, cost=ctx.trace.cost, latency_s=latency, cpu_s=cpu
            )

        outcomes = await asyncio.gather(*(outcome(m, i < len(order) - 1) for i, m in enumerate(order)))
        return CascadeRecord(outcomes={m.name: o for m, o in zip(order, outcomes, strict=True)})

    def record(
        self, members: Sequence[Member], request: Request, quality: Callable[[Generation], float]
    ) -> CascadeRecord:
        return run_sync(self.arecord(members, request, quality))

    def curve(
        self, records: Sequence[CascadeRecord], cost: CostKind = "auto", grid: int = 41
    ) -> list[OperatingPoint]:
        """The quality-cost frontier over threshold settings: the best quality for each cost, cheapest
        first."""
        return frontier(records, self._record_order(records), cost=cost, grid=grid)

    def operating_point(
        self,
        records: Sequence[CascadeRecord],
        *,
        target_quality: float | None = None,
        budget: float | None = None,
        cost: CostKind = "auto",
        grid: int = 41,
    ) -> OperatingPoint:
        """The thresholds that reach `target_quality` at the lowest mean cost, or the best quality within a
        mean `budget` per request; `cost` is "money" (Member.price), "latency" (seconds), "cpu" (CPU seconds,
        steady on a shared machine), or "auto" (money if any member cost money, else latency)."""
        curve = self.curve(records, cost=cost, grid=grid)
        return choose_point(curve, target_quality=target_quality, budget=budget)

    def calibrate(
        self,
        records: Sequence[CascadeRecord],
        *,
        target_quality: float | None = None,
        budget: float | None = None,
        cost: CostKind = "auto",
        grid: int = 41,
    ) -> Cascade:
        """A copy with the thresholds of `operating_point(...)` (same arguments)."""
        point = self.operating_point(
            records, target_quality=target_quality, budget=budget, cost=cost, grid=grid
        )
        return self.model_copy(update={"thresholds": point.thresholds})

    def _record_order(self, records: Sequence[CascadeRecord]) -> list[str]:
        if self.members is not None:
            return list(self.members)
        if not records:
            raise ConfigError("calibration needs at least one record")
        return list(records[0].outcomes)


class _Walk:
    """What the escalation so far has seen: steps, errors, rejected answers, the accepted one."""

    def __init__(self, order: list[Member]):
        self.order = order
        self.steps: list[CascadeStep] = []
        self.errors: dict[str, BaseException] = {}
        self.rejected: list[tuple[Generation, float]] = []
        self.accepted: Generation | None = None

    def failed(self, member: Member, err: MemberError) -> None:
        self.errors[member.name] = err.__cause__ or err
        self.steps.append(CascadeStep(member=member.name, decision="failed", why=f"{err}; escalated"))

    def fallback(self) -> Generation:
        """The most confident rejected answer, once every later member failed."""
        if not self.rejected:
            raise AllMembersFailedError(self.errors)
        generation, score = max(self.rejected, key=lambda item: item[1])
        self.steps.append(
            CascadeStep(
                member=generation.member,
                decision="accepted",
                score=None if score == -math.inf else score,
                why="every later member failed: the most confident earlier answer",
            )
        )
        return generation

    def reason(self) -> str:
        decided = self.steps[-1]
        earlier = len(self.steps) - 1
        return f"{decided.member!r} {decided.decision}: {decided.why} (after {earlier} earlier step(s))"

    def dump(self) -> list[dict[str, Any]]:
        return [s.model_dump() for s in self.steps]


def _body(generation: Generation) -> list[Delta]:
    """A finished answer as stream deltas, without the member's own final delta (the strategy writes its
    own)."""
    return [d for d in generation_to_deltas(generation) if not d.final]
