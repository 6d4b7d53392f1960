"""`Fallback`: the first member, in order, that answers without error."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import ClassVar

from pydantic import Field

from ensemble_core.errors import AllMembersFailedError, MemberError
from ensemble_core.members.base import Member
from ensemble_core.strategies.base import Strategy, resolve_member
from ensemble_core.strategies.context import RunContext
from ensemble_core.types import Delta, Request, Result


class Fallback(Strategy):
    """Ask members one at a time, in order, until one answers; a stream falls back only before its first
    token (after that, a failure ends the stream with an error rather than splicing two answers)."""

    name: ClassVar[str] = "fallback"
    summary: ClassVar[str] = "the first member, in order, that answers without error"

    order: list[str] | None = Field(default=None, description="member names in the order to try; default: as listed")

    def members_used(self, members: Sequence[Member]) -> list[Member]:
        if self.order is None:
            return list(members)
        return [resolve_member(members, name, "fallback.order") for name in self.order]

    def _order(self, ctx: RunContext) -> list[Member]:
        return self.members_used(list(ctx.members.values()))

    async def arun(self, ctx: RunContext, request: Request) -> Result:
        errors: dict[str, BaseException] = {}
        for member in self._order(ctx):
            try:
                generation = await ctx.generate(member, request, role="attempt", require_answer=True)
            except MemberError as err:
                errors[member.name] = err.__cause__ or err
                continue
            return ctx.result(generation, reason=_reason(member, errors))
        raise AllMembersFailedError(errors)

    async def astream(self, ctx: RunContext, request: Request) -> AsyncIterator[Delta]:
        errors: dict[str, BaseException] = {}
        for member in self._order(ctx):
            started = False
            try:
                async for delta in ctx.stream(member, request, role="attempt", require_answer=True):
                    started = True
                    yield delta
            except MemberError as err:
                if started:
                    raise
                errors[member.name] = err.__cause__ or err
                continue
            yield ctx.final_delta(member.name, reason=_reason(member, errors))
            return
        raise AllMembersFailedError(errors)


def _reason(member: Member, errors: dict[str, BaseException]) -> str:
    if not errors:
        return f"{member.name!r} answered first"
    return f"{member.name!r} answered after {', '.join(map(repr, errors))} failed"
