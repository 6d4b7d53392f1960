"""The `Strategy` base class. A strategy is a pydantic model whose fields are its parameters (mergekit-style):
validation, config files, CLI help and docs all come from the one declaration.

Every strategy names the members it uses in one field, `members` (the members in its main role: candidates,
proposers, the escalation order, the one that answers); members in another role are named by the role
(`judge`, `fuser`, `verifier`, `default`). `members_used()` is the one answer to "whom may it call"."""

from __future__ import annotations

import asyncio
import copy
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ensemble_core.errors import ConfigError
from ensemble_core.members.base import Capability, Member
from ensemble_core.run_context import RunContext
from ensemble_core.types import Delta, Request, Result, tool_calls_to_chunks


class Strategy(BaseModel, ABC):
    """How an ensemble turns one request into one answer using its members."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    name: ClassVar[str]
    summary: ClassVar[str]
    paper: ClassVar[str | None] = None
    requires: ClassVar[frozenset[Capability]] = frozenset({Capability.GENERATE})
    members_doc: ClassVar[str] = "names of the members this strategy uses, in order; default: all"
    legacy_members_name: ClassVar[str | None] = None
    """An earlier name of `members` for this strategy (e.g. "order"), still accepted in configs and code."""
    composes_answer: ClassVar[bool] = False
    """The answer is composed token by token or piece by piece from several members (token, span and step
    fusion): no one member's log-probabilities describe it."""

    members: list[str] | None = Field(default=None, description=members_doc)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        """Each strategy says in its own words what `members` means for it (docs, CLI help, schema)."""
        super().__pydantic_init_subclass__(**kwargs)
        field = cls.__pydantic_fields__["members"]
        if field.description != cls.members_doc:
            field = copy.copy(field)
            field.description = cls.members_doc
            cls.__pydantic_fields__["members"] = field
            cls.model_rebuild(force=True)

    @model_validator(mode="before")
    @classmethod
    def _accept_legacy_members_name(cls, data: Any) -> Any:
        old = cls.legacy_members_name
        if not (old and isinstance(data, dict) and old in data):
            return data
        if "members" in data:
            raise ValueError(f"give members or its earlier name {old!r}, not both")
        data = dict(data)
        value = data.pop(old)
        data["members"] = [value] if isinstance(value, str) else value
        return data

    def participants(self, members: Sequence[Member]) -> list[Member]:
        """The members in the strategy's main role, in order: those `members` names, else the default."""
        if self.members is None:
            return self.default_participants(members)
        return [resolve_member(members, name, f"{self.name}.members") for name in self.members]

    def default_participants(self, members: Sequence[Member]) -> list[Member]:
        """The main role's members when `members` is not given: all, as listed."""
        return list(members)

    def role_members(self, members: Sequence[Member]) -> list[Member]:
        """Members named by another role (a judge, a fuser, a default): none unless a strategy has roles."""
        return []

    def members_used(self, members: Sequence[Member]) -> list[Member]:
        """Every member this strategy may call: its participants, then its role members; only these are
        checked and loaded."""
        return list(dict.fromkeys([*self.participants(members), *self.role_members(members)]))

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
