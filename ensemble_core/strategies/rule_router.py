"""`RuleRouter`: ordered rules (keywords, regular expressions, message length, tools offered, tool results
in) pick the member; the first rule that matches wins, else the default member answers."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from ensemble_core.members.base import Member
from ensemble_core.run_context import RunContext
from ensemble_core.scoring.conversation import ends_with_tool_results, last_query, query_turns
from ensemble_core.strategies.base import resolve_member
from ensemble_core.strategies.routing import Router, RoutingDecision
from ensemble_core.types import Request


class Rule(BaseModel):
    """Send the request to `member` when every condition that is set holds (unset conditions are ignored)."""

    model_config = ConfigDict(extra="forbid")

    member: str = Field(description="name of the member that answers when this rule matches")
    keywords: list[str] = Field(
        default_factory=list, description="any of these words or phrases (case-insensitive, whole words)"
    )
    pattern: str | None = Field(default=None, description="a regular expression searched in the text")
    min_chars: int | None = Field(
        default=None, ge=0, description="the text has at least this many characters"
    )
    max_chars: int | None = Field(default=None, ge=0, description="the text has at most this many characters")
    has_tools: bool | None = Field(
        default=None, description="the request offers tools (true) or none (false)"
    )
    has_tool_results: bool | None = Field(
        default=None,
        description="the conversation ends with tool results (an agent's turn after its tools answered)",
    )
    scope: Literal["last_user", "user_turns"] = Field(
        default="last_user", description="text the conditions read: the newest user turn, or every user turn"
    )
    _keywords: list[re.Pattern[str]] = PrivateAttr(default_factory=list)
    _pattern: re.Pattern[str] | None = PrivateAttr(default=None)

    @field_validator("pattern")
    @classmethod
    def _valid_pattern(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as err:
                raise ValueError(f"invalid regular expression {pattern!r}: {err}") from err
        return pattern

    @model_validator(mode="after")
    def _has_condition(self) -> Rule:
        conditions = (
            self.keywords,
            self.pattern,
            self.min_chars,
            self.max_chars,
            self.has_tools,
            self.has_tool_results,
        )
        if all(c is None or c == [] for c in conditions):
            raise ValueError(
                f"the rule for {self.member!r} has no condition: set keywords, pattern, min_chars, max_chars "
                "has_tools or has_tool_results (use the router's `default` for a catch-all)"
            )
        if self.min_chars is not None and self.max_chars is not None and self.min_chars > self.max_chars:
            raise ValueError(
                f"the rule for {self.member!r} has min_chars {self.min_chars} > max_chars {self.max_chars}"
            )
        self._keywords = [re.compile(rf"(?<!\w){re.escape(k)}(?!\w)", re.IGNORECASE) for k in self.keywords]
        self._pattern = re.compile(self.pattern) if self.pattern is not None else None
        return self

    def why(self, request: Request) -> str | None:
        """What matched, in words, or None when the rule does not match this request."""
        text = (
            last_query(request.messages)
            if self.scope == "last_user"
            else "\n".join(query_turns(request.messages))
        )
        reasons: list[str] = []
        if self.keywords:
            found = [k for k, rx in zip(self.keywords, self._keywords, strict=True) if rx.search(text)]
            if not found:
                return None
            reasons.append(f"keyword {found[0]!r}")
        if self._pattern is not None:
            if not self._pattern.search(text):
                return None
            reasons.append(f"pattern {self.pattern!r}")
        if self.min_chars is not None or self.max_chars is not None:
            too_short = self.min_chars is not None and len(text) < self.min_chars
            too_long = self.max_chars is not None and len(text) > self.max_chars
            if too_short or too_long:
                return None
            reasons.append(f"length {len(text)} chars")
        if self.has_tools is not None:
            if bool(request.tools) != self.has_tools:
                return None
            reasons.append("tools offered" if self.has_tools else "no tools")
        if self.has_tool_results is not None:
            if ends_with_tool_results(request.messages) != self.has_tool_results:
                return None
            reasons.append("tool results in" if self.has_tool_results else "no tool results")
        return ", ".join(reasons)


class RuleRouter(Router):
    """The first matching rule's member answers; if it fails, the next matching rule's, then the default."""

    name: ClassVar[str] = "rule-router"
    summary: ClassVar[str] = (
        "ordered rules (keywords, regex, length, tools, tool results) choose the member that answers"
    )
    members_doc: ClassVar[str] = (
        "names of the members it may route to; default: those the rules name (and `default`)"
    )

    rules: list[Rule] = Field(default_factory=list, description="rules tried in order; the first match wins")
    default: str = Field(description="member that answers when no rule matches")

    def default_participants(self, members: Sequence[Member]) -> list[Member]:
        return [resolve_member(members, rule.member, "rule-router.rules") for rule in self.rules]

    def role_members(self, members: Sequence[Member]) -> list[Member]:
        return [resolve_member(members, self.default, "rule-router.default")]

    async def aroute(self, ctx: RunContext, request: Request) -> RoutingDecision:
        matches = [
            (i, rule, why) for i, rule in enumerate(self.rules) if (why := rule.why(request)) is not None
        ]
        ranking = list(dict.fromkeys([*(rule.member for _, rule, _ in matches), self.default]))
        if matches:
            index, rule, why = matches[0]
            reason = f"rule {index} ({why}) -> {rule.member!r}"
        else:
            reason = f"no rule matched -> default {self.default!r}"
        return RoutingDecision(
            ranking=ranking, reason=reason, details={"matched_rules": [i for i, _, _ in matches]}
        )
