"""`Fallback`: the first member, in order, that answers without error."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from pydantic import Field

from ensemble_core.members.base import Member
from ensemble_core.strategies.base import resolve_member
from ensemble_core.strategies.context import RunContext
from ensemble_core.strategies.routing import Router, RoutingDecision
from ensemble_core.types import Request


class Fallback(Router):
    """A router with a fixed ranking: ask members one at a time, in order, until one answers. A stream falls
    back only before its first token (after that, a failure ends the stream with an error rather than
    splicing two answers)."""

    name: ClassVar[str] = "fallback"
    summary: ClassVar[str] = "the first member, in order, that answers without error"

    order: list[str] | None = Field(
        default=None, description="member names in the order to try; default: as listed"
    )

    def members_used(self, members: Sequence[Member]) -> list[Member]:
        if self.order is None:
            return list(members)
        return [resolve_member(members, name, "fallback.order") for name in self.order]

    async def aroute(self, ctx: RunContext, request: Request) -> RoutingDecision:
        ranking = [m.name for m in self.members_used(list(ctx.members.values()))]
        return RoutingDecision(ranking=ranking, reason=f"{ranking[0]!r} is first in order")
