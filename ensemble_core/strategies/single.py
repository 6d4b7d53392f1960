"""`Single`: one named member answers. The baseline every ensemble is compared with."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import ClassVar

from pydantic import field_validator

from ensemble_core.errors import EnsembleError, MemberError
from ensemble_core.run_context import RunContext
from ensemble_core.strategies.base import Strategy
from ensemble_core.types import Delta, Request, Result


class Single(Strategy):
    """Ask one member, by name: `Single(members=["smollm2"])`, or `member="smollm2"` (its earlier name)."""

    name: ClassVar[str] = "single"
    summary: ClassVar[str] = "one named member answers (the baseline)"
    members_doc: ClassVar[str] = "the one member that answers, as a one-name list (or `member: NAME`)"
    legacy_members_name: ClassVar[str | None] = "member"

    members: list[str]  # required here: there is no default member

    @field_validator("members")
    @classmethod
    def _exactly_one(cls, members: list[str]) -> list[str]:
        if len(members) != 1:
            raise ValueError(
                "single takes exactly one member name, e.g. members=['smollm2'] or member='smollm2'"
            )
        return members

    @property
    def member(self) -> str:
        """The name of the member that answers."""
        return self.members[0]

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
