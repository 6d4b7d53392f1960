"""Candidates from several members at once, for the strategies that choose after inference (Vote, MBR,
RankAndFuse): every member (and every sample) is asked concurrently; members that fail are dropped and the
trace records why; only when none answers does the request fail, saying why each failed."""

from __future__ import annotations

import asyncio
from abc import ABC
from collections.abc import Sequence

from pydantic import Field

from ensemble_core.errors import AllMembersFailedError, MemberError
from ensemble_core.members.base import Member
from ensemble_core.strategies.base import Strategy, resolve_member
from ensemble_core.strategies.context import RunContext
from ensemble_core.types import Generation, Request


def named_members(members: Sequence[Member], names: Sequence[str] | None, field: str) -> list[Member]:
    """The members named (in that order), or all of them when `names` is None."""
    if names is None:
        return list(members)
    return [resolve_member(members, name, field) for name in names]


def sampled_requests(
    request: Request, samples: int, temperature: float, first_seed: int = 0
) -> list[Request]:
    """`samples` copies of the request sampled at `temperature`, with the seeds seed + first_seed, + 1, ...
    (seed 0 when the request has none), so sampled answers are reproducible."""
    base_seed = (request.params.seed or 0) + first_seed
    return [request.with_params(temperature=temperature, seed=base_seed + i) for i in range(samples)]


async def gather_candidates(
    ctx: RunContext, members: Sequence[Member], requests: Sequence[Request], role: str = "candidate"
) -> list[Generation]:
    """Every member answers every request, all concurrently; the answers in member order. Failures are dropped
    (recorded in the trace); if all fail, `AllMembersFailedError` names each member's error."""
    jobs = [(member, r) for member in members for r in requests]
    outcomes = await asyncio.gather(
        *(ctx.generate(m, r, role=role, require_answer=True) for m, r in jobs), return_exceptions=True
    )
    answers: list[Generation] = []
    errors: dict[str, BaseException] = {}
    for (member, _), outcome in zip(jobs, outcomes, strict=True):
        if isinstance(outcome, MemberError):
            errors.setdefault(member.name, outcome.__cause__ or outcome)
        elif isinstance(outcome, BaseException):
            raise outcome
        else:
            answers.append(outcome)
    if not answers:
        raise AllMembersFailedError(errors)
    return answers


class CandidateStrategy(Strategy, ABC):
    """A strategy that asks its members (each `samples_per_member` times) and then picks or merges."""

    candidates: list[str] | None = Field(
        default=None, description="names of the members whose answers are the candidates; default: all"
    )
    samples_per_member: int = Field(
        default=1, ge=1, le=64, description="answers per member; above 1 they are sampled (self-consistency)"
    )
    temperature: float = Field(
        default=0.7, gt=0.0, le=10.0, description="sampling temperature when samples_per_member is above 1"
    )

    def members_used(self, members: Sequence[Member]) -> list[Member]:
        return named_members(members, self.candidates, f"{self.name}.candidates")

    async def gather(self, ctx: RunContext, request: Request) -> list[Generation]:
        sampling = self.samples_per_member > 1
        requests = (
            sampled_requests(request, self.samples_per_member, self.temperature) if sampling else [request]
        )
        role = "sample" if sampling else "candidate"
        return await gather_candidates(
            ctx, self.members_used(list(ctx.members.values())), requests, role=role
        )
