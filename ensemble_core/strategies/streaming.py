"""Streaming with a fallback that never splices two answers: a member that fails before its first token can
be replaced by another answer (nothing was sent yet); one that fails after it ends the stream with its error.
Routers, cascades and rank-and-fuse stream this way."""

from __future__ import annotations

from collections.abc import AsyncIterator

from ensemble_core.errors import MemberError
from ensemble_core.members.base import Member
from ensemble_core.run_context import RunContext
from ensemble_core.types import Delta, Request


class FailedBeforeFirstToken(Exception):
    """The member failed before it streamed anything; `error` says why (it is in the trace too)."""

    def __init__(self, error: MemberError):
        super().__init__(str(error))
        self.error = error


async def stream_or_fail_early(
    ctx: RunContext, member: Member, request: Request, role: str, *, require_answer: bool = False
) -> AsyncIterator[Delta]:
    """The member's deltas, as `ctx.stream` gives them; a failure before the first delta raises
    `FailedBeforeFirstToken` (fall back), a failure after it raises its `MemberError` (stop)."""
    started = False
    try:
        async for delta in ctx.stream(member, request, role, require_answer=require_answer):
            started = True
            yield delta
    except MemberError as err:
        if started:
            raise
        raise FailedBeforeFirstToken(err) from err
