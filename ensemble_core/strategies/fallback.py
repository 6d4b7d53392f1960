"""`Fallback`: the first member, in order, that answers without error."""

from __future__ import annotations

from typing import ClassVar

from ensemble_core.run_context import RunContext
from ensemble_core.strategies.routing import Router, RoutingDecision
from ensemble_core.types import Request


class Fallback(Router):
    """A router with a fixed ranking: ask members one at a time, in order, until one answers. A stream falls
    back only before its first token (after that, a failure ends the stream with an error rather than
    splicing two answers)."""

    name: ClassVar[str] = "fallback"
    summary: ClassVar[str] = "the first member, in order, that answers without error"

    members_doc: ClassVar[str] = "member names in the order to try (or `order`); default: as listed"
    legacy_members_name: ClassVar[str | None] = "order"

    async def aroute(self, ctx: RunContext, request: Request) -> RoutingDecision:
        ranking = [m.name for m in self.participants(list(ctx.members.values()))]
        return RoutingDecision(ranking=ranking, reason=f"{ranking[0]!r} is first in order")
