"""`ScriptedMember`: a member that answers from a script. For tests of the mechanics (tool calls, failures,
latency, concurrency) where a small real model cannot be relied on, and for demos without weights."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

from ensemble_core.members.base import Capability, Member
from ensemble_core.types import Delta, Generation, Request, ToolCall, Usage, tool_calls_to_chunks

Reply = str | ToolCall | list[ToolCall] | BaseException
Script = Sequence[Reply] | Callable[[Request], Reply]


class ScriptedMember(Member):
    """Replies in turn from `script` (cycling), or from `script(request)` when it is a callable.

    A reply is text, a tool call, a list of tool calls, or an exception to raise. `delay_s` sleeps before
    answering (async-aware, so concurrent calls overlap); streaming yields the text word by word.
    """

    def __init__(
        self,
        name: str,
        script: Script,
        *,
        delay_s: float = 0.0,
        capabilities: frozenset[Capability] | None = None,
        **options: Any,
    ):
        """`options` are the `Member` ones: price, context_window, timeout_s, breaker."""
        super().__init__(name, **options)
        self.script = script
        self.delay_s = delay_s
        self.calls: list[Request] = []
        if capabilities is not None:
            self.capabilities = capabilities  # type: ignore[misc]

    def _reply(self, request: Request) -> Generation:
        self.calls.append(request)
        if callable(self.script):
            reply = self.script(request)
        else:
            reply = self.script[(len(self.calls) - 1) % len(self.script)]
        if isinstance(reply, BaseException):
            raise reply
        calls = [reply] if isinstance(reply, ToolCall) else reply if isinstance(reply, list) else []
        text = reply if isinstance(reply, str) else ""
        prompt_tokens = sum(len(m.content.split()) for m in request.messages)
        return Generation(
            member=self.name,
            text=text,
            tool_calls=calls,
            usage=Usage(input_tokens=prompt_tokens, output_tokens=len(text.split()) + len(calls)),
            finish_reason="tool_calls" if calls else "stop",
            prompt_format="scripted",
        )

    def generate(self, request: Request) -> Generation:
        if self.delay_s:
            time.sleep(self.delay_s)
        return self._reply(request)

    async def agenerate(self, request: Request) -> Generation:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return self._reply(request)

    def stream(self, request: Request) -> Iterator[Delta]:
        yield from _as_deltas(self.generate(request))

    async def astream(self, request: Request) -> AsyncIterator[Delta]:
        generation = await self.agenerate(request)
        for delta in _as_deltas(generation):
            await asyncio.sleep(0)
            yield delta


def _as_deltas(generation: Generation) -> Iterator[Delta]:
    if generation.text:
        for i, word in enumerate(generation.text.split(" ")):
            yield Delta(text=word if i == 0 else " " + word, member=generation.member)
    if generation.tool_calls:
        yield Delta(tool_call_chunks=tool_calls_to_chunks(generation.tool_calls), member=generation.member)
    yield Delta(
        member=generation.member, final=True, finish_reason=generation.finish_reason, usage=generation.usage
    )
