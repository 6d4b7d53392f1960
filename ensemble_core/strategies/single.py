"""`Single`: one named member answers. The baseline every ensemble is compared with."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import ClassVar

from pydantic import Field

from ensemble_core.errors import EnsembleError, MemberError
from ensemble_core.members.base import Member
from ensemble_core.strategies.base import Strategy, resolve_member
from ensemble_core.strategies.context import RunContext
from ensemble_core.types import Delta, Request, Result


class Single(Strategy):
    """Ask one member, by name."""

    name: ClassVar[str] = "single"
    summary: ClassVar[str] = "one named member answers (the baseline)"

    member: str = Field(description="name of the member that answers")

    def members_used(self, members: Sequence[Member]) -> list[Member]:
        return [resolve_member(members, self.member, "single.member")]

    async def arun(self, ctx: RunContext, request: Request) -> Result:
        try:
            generation = await ctx.generate(ctx.member(self.member), request, role="answer")
        except MemberError as err:
            # With one member there is nothing to fall back to: a request error (context window) stays itself.
            raise err.__cause__ if isinstance(err.__cause__, EnsembleError) else err from None
        return ctx.result(generation, reason=f"single member {self.member!r}")

    async def astream(self, ctx: RunContext, request: Request) -> AsyncIterator[Delta]:
        async for delta in ctx.stream(ctx.member(self.member), request, role="answer"):
            yield delta
        yield ctx.final_delta(self.member, reason=f"single member {self.member!r}")
