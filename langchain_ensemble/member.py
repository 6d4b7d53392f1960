"""`LangChainMember`: any LangChain chat model (ChatOpenAI, ChatOllama, ChatAnthropic, ChatHuggingFace, ...)
as an engine member, so it mixes with `HFMember` and `OpenAICompatMember` in one ensemble.

It generates with `invoke` / `ainvoke`, streams with `stream` / `astream`, takes tools through the model's
own `bind_tools` (tool calls are passed through as the model produced them), and reads usage from
`usage_metadata`. The wrapped model's own settings (temperature, max tokens) apply; stop sequences are
passed on per call.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.runnables import Runnable, RunnableConfig

from ensemble_core.errors import CapabilityError
from ensemble_core.members.base import Member, Price, member_name_from
from ensemble_core.types import Delta, FinishReason, Generation, Request, ToolCall, Usage
from langchain_ensemble.messages import chunk_to_delta, to_langchain_messages
from langchain_ensemble.tools import langchain_tool_choice

_LENGTH_REASONS = {"length", "max_tokens", "MAX_TOKENS"}


class LangChainMember(Member):
    """A LangChain `BaseChatModel` as a member (generate capability). `name` defaults to the model's name."""

    def __init__(
        self,
        model: BaseChatModel,
        *,
        name: str | None = None,
        price: Price | None = None,
        context_window: int | None = None,
        timeout_s: float | None = None,
    ):
        if not isinstance(model, BaseChatModel):
            raise CapabilityError(
                f"LangChainMember wraps a LangChain BaseChatModel, not a {type(model).__name__}"
            )
        self.model = model
        super().__init__(
            name or member_name_from(self.model_name, "langchain"),
            price=price,
            context_window=context_window,
            timeout_s=timeout_s,
        )

    @property
    def model_name(self) -> str:
        for attribute in ("model_name", "model", "model_id"):
            value = getattr(self.model, attribute, None)
            if isinstance(value, str) and value:
                return value
        return self.model._llm_type

    @property
    def context_window(self) -> int | None:
        profile = self.model.profile or {}
        return self._context_window or profile.get("max_input_tokens")

    @property
    def supports_tools(self) -> bool:
        """Whether the wrapped model implements tool calling (`bind_tools`)."""
        return type(self.model).bind_tools is not BaseChatModel.bind_tools

    @property
    def supports_tool_choice(self) -> bool:
        """Whether the wrapped model's `bind_tools` takes `tool_choice` (forced tool calls)."""
        return self.supports_tools and "tool_choice" in inspect.signature(self.model.bind_tools).parameters

    # calls
    # -----------------------------------------------------------------------------------------------------
    def generate(self, request: Request) -> Generation:
        start = time.perf_counter()
        args, kwargs = self._inputs(request)
        message = self._runnable(request).invoke(*args, **kwargs)
        return self._generation(message, time.perf_counter() - start)

    async def agenerate(self, request: Request) -> Generation:
        start = time.perf_counter()
        args, kwargs = self._inputs(request)
        message = await self._runnable(request).ainvoke(*args, **kwargs)
        return self._generation(message, time.perf_counter() - start)

    def stream(self, request: Request) -> Iterator[Delta]:
        full: AIMessageChunk | None = None
        args, kwargs = self._inputs(request)
        for chunk in self._runnable(request).stream(*args, **kwargs):
            full = chunk if full is None else full + chunk
            delta = chunk_to_delta(chunk, self.name)
            if delta.text or delta.tool_call_chunks:
                yield delta
        yield self._final_delta(full)

    async def astream(self, request: Request) -> AsyncIterator[Delta]:
        full: AIMessageChunk | None = None
        args, kwargs = self._inputs(request)
        async for chunk in self._runnable(request).astream(*args, **kwargs):
            full = chunk if full is None else full + chunk
            delta = chunk_to_delta(chunk, self.name)
            if delta.text or delta.tool_call_chunks:
                yield delta
        yield self._final_delta(full)

    # translation
    # -----------------------------------------------------------------------------------------------
    def _runnable(self, request: Request) -> Runnable[Any, Any]:
        if not request.tools:
            return self.model
        if not self.supports_tools:
            raise CapabilityError(
                f"member {self.name!r} wraps {type(self.model).__name__}, which has no tool calling "
                "(bind_tools); drop the tools or use a tool-capable model"
            )
        tools = [t.as_openai() for t in request.tools]
        choice = langchain_tool_choice(request.tool_choice)
        if choice is None:
            return self.model.bind_tools(tools)
        return self.model.bind_tools(tools, tool_choice=choice)

    def _inputs(self, request: Request) -> tuple[tuple[list[BaseMessage], RunnableConfig], dict[str, Any]]:
        """Positional and keyword arguments of the call: the messages, a config without the caller's
        callbacks, and the stop sequences. The member's own tokens must not reach the caller's callbacks,
        LangGraph's message stream or `astream_events` as a second chat model: the ensemble streams what it
        decides."""
        messages = to_langchain_messages(request.prefilled_messages)
        return (messages, RunnableConfig(callbacks=[])), {"stop": request.params.stop or None}

    def _generation(self, message: Any, latency_s: float) -> Generation:
        if not isinstance(message, AIMessage):
            raise CapabilityError(
                f"member {self.name!r} returned a {type(message).__name__}, not an AIMessage"
            )
        calls = [
            ToolCall(name=c["name"], arguments=c["args"], **({"id": c["id"]} if c.get("id") else {}))
            for c in message.tool_calls
        ]
        return Generation(
            member=self.name,
            text=message.text,
            tool_calls=calls,
            usage=_usage(message),
            latency_s=latency_s,
            finish_reason=_finish_reason(message, bool(calls)),
            prompt_format="langchain",
        )

    def _final_delta(self, full: AIMessageChunk | None) -> Delta:
        if full is None:
            return Delta(member=self.name, final=True, finish_reason="stop", usage=Usage())
        return Delta(
            member=self.name,
            final=True,
            finish_reason=_finish_reason(full, bool(full.tool_call_chunks)),
            usage=_usage(full),
        )


def _usage(message: AIMessage) -> Usage:
    usage = message.usage_metadata
    if usage is None:
        return Usage()
    return Usage(input_tokens=usage["input_tokens"], output_tokens=usage["output_tokens"])


def _finish_reason(message: AIMessage, has_tool_calls: bool) -> FinishReason:
    if has_tool_calls:
        return "tool_calls"
    metadata = message.response_metadata
    reason = metadata.get("finish_reason") or metadata.get("stop_reason") or metadata.get("done_reason")
    return "length" if reason in _LENGTH_REASONS else "stop"
