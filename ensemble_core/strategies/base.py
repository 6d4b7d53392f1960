"""The `Strategy` base class. A strategy is a pydantic model whose fields are its parameters (mergekit-style):
validation, config files, CLI help and docs all come from the one declaration."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import ClassVar

from pydantic import BaseModel, ConfigDict

from ensemble_core.errors import ConfigError
from ensemble_core.members.base import Capability, Member
from ensemble_core.strategies.context import RunContext
from ensemble_core.types import Delta, Request, Result, tool_calls_to_chunks


class Strategy(BaseModel, ABC):
    """How an ensemble turns one request into one answer using its members."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    name: ClassVar[str]
    summary: ClassVar[str]
    paper: ClassVar[str | None] = None
    requires: ClassVar[frozenset[Capability]] = frozenset({Capability.GENERATE})

    def members_used(self, members: Sequence[Member]) -> list[Member]:
        """The members this strategy may call (default: all); only these are checked and loaded."""
        return list(members)

    def check(self, members: Mapping[str, Member]) -> None:
        """Raise a `ConfigError` naming the member and the missing capability or unknown name."""
        for member in self.members_used(list(members.values())):
            for capability in sorted(self.requires, key=lambda c: c.value):
                member.require(capability, f"strategy {self.name!r}")

    @abstractmethod
    async def arun(self, ctx: RunContext, request: Request) -> Result:
        """Answer the request."""

    async def arun_batch(self, ctxs: Sequence[RunContext], requests: Sequence[Request]) -> list[Result]:
        """Answer several requests, one context each. Default: one `arun` each, concurrently; a strategy that
        shares work across requests (token fusion decodes them as rows of one batch) overrides it."""
        return list(
            await asyncio.gather(
                *(self.arun(ctx, request) for ctx, request in zip(ctxs, requests, strict=True))
            )
        )

    async def astream(self, ctx: RunContext, request: Request) -> AsyncIterator[Delta]:
        """Stream the answer; the default streams the finished result (override to stream as decided)."""
        result = await self.arun(ctx, request)
        chunks = tool_calls_to_chunks(result.tool_calls)
        if result.text or chunks:
            yield Delta(text=result.text, tool_call_chunks=chunks, member=result.trace.chosen)
        yield Delta(
            final=True,
            finish_reason=result.finish_reason,
            usage=result.usage,
            trace=result.trace,
            member=result.trace.chosen,
        )


def resolve_member(members: Sequence[Member], name: str, field: str) -> Member:
    """The member called `name`, or a ConfigError that lists the names there are."""
    for member in members:
        if member.name == name:
            return member
    known = ", ".join(m.name for m in members)
    raise ConfigError(f"{field}: no member is named {name!r}; the members are: {known}")
