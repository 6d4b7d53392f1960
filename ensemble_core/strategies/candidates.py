"""Candidates from several members at once, for the strategies that choose after inference (Vote, MBR):
every member (and every sample) is asked concurrently; members that fail are dropped and the trace records
why; only when none answers does the request fail, saying why each failed."""

from __future__ import annotations

from abc import ABC
from typing import ClassVar

from pydantic import Field

from ensemble_core.run_context import RunContext
from ensemble_core.scoring.sampling import sampled_requests
from ensemble_core.strategies.base import Strategy
from ensemble_core.types import Generation, Request


class CandidateStrategy(Strategy, ABC):
    """A strategy that asks its members (each `samples_per_member` times) and then picks or merges."""

    members_doc: ClassVar[str] = (
        "names of the members whose answers are the candidates (or `candidates`); default: all"
    )
    legacy_members_name: ClassVar[str | None] = "candidates"

    samples_per_member: int = Field(
        default=1, ge=1, le=64, description="answers per member; above 1 they are sampled (self-consistency)"
    )
    temperature: float = Field(
        default=0.7, gt=0.0, le=10.0, description="sampling temperature when samples_per_member is above 1"
    )

    async def gather(self, ctx: RunContext, request: Request) -> list[Generation]:
        """Every candidate member's answers (sampled when `samples_per_member` is above 1)."""
        sampling = self.samples_per_member > 1
        requests = (
            sampled_requests(request, self.samples_per_member, self.temperature) if sampling else [request]
        )
        role = "sample" if sampling else "candidate"
        answers, _ = await ctx.generate_all(
            self.participants(list(ctx.members.values())), requests, role=role
        )
        return answers
