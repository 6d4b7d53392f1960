"""`LlamaIndexMember`: any LlamaIndex `LLM` (OpenAI, Ollama, vLLM, a custom one) as an ensemble member, so it
can sit next to engine members (HFMember, OpenAICompatMember) in one ensemble."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from llama_index.core.base.llms.types import ChatMessage, ChatResponse
from llama_index.core.callbacks.token_counting import get_tokens_from_response
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import LLM

from ensemble_core.errors import CapabilityError
from ensemble_core.members.base import Member, Price, member_name_from
from ensemble_core.types import Delta, Generation, Request, ToolCall, Usage, tool_calls_to_chunks
from llamaindex_ensemble.messages import SpecTool, to_llama_messages


class LlamaIndexMember(Member):
    """Wraps a LlamaIndex `LLM`. Requests go through its chat / achat / stream_chat / astream_chat; tools go
    through the `FunctionCallingLLM` API when the LLM is a function-calling model.

    Generation parameters (temperature, max tokens) are the wrapped LLM's own settings: LlamaIndex LLMs take
    them at construction, not per call. The name defaults to the LLM's model name.
    """

    def __init__(
        self,
        llm: LLM,
        *,
        name: str | None = None,
        price: Price | None = None,
        context_window: int | None = None,
        timeout_s: float | None = None,
    ):
        super().__init__(
            name or member_name_from(llm.metadata.model_name, default="llamaindex"),
            price=price,
            context_window=context_window or llm.metadata.context_window,
            timeout_s=timeout_s,
        )
        self.llm = llm

    @property
    def model_name(self) -> str:
        return self.llm.metadata.model_name

    @property
    def supports_tools(self) -> bool:
        return isinstance(self.llm, FunctionCallingLLM) and self.llm.metadata.is_function_calling_model

    def format_prompt(self, request: Request) -> str:
        return self.llm.messages_to_prompt(to_llama_messages(request.messages))

    # generate -----------------------------------------------------------------------------------------------
    def generate(self, request: Request) -> Generation:
        start = time.perf_counter()
        messages, tools, options = self._call(request)
        if tools:
            response = self._tool_llm.chat_with_tools(tools, chat_history=messages, **options)
        else:
            response = self.llm.chat(messages)
        return self._generation(response, time.perf_counter() - start)

    async def agenerate(self, request: Request) -> Generation:
        start = time.perf_counter()
        messages, tools, options = self._call(request)
        if tools:
            response = await self._tool_llm.achat_with_tools(tools, chat_history=messages, **options)
        else:
            response = await self.llm.achat(messages)
        return self._generation(response, time.perf_counter() - start)

    def stream(self, request: Request) -> Iterator[Delta]:
        start = time.perf_counter()
        messages, tools, options = self._call(request)
        if tools:
            responses = self._tool_llm.stream_chat_with_tools(tools, chat_history=messages, **options)
        else:
            responses = self.llm.stream_chat(messages)
        last: ChatResponse | None = None
        streamed = ""
        for last in responses:
            if last.delta:
                streamed += last.delta
                yield Delta(text=last.delta, member=self.name)
        yield from self._stream_end(last, streamed, time.perf_counter() - start)

    async def astream(self, request: Request) -> AsyncIterator[Delta]:
        start = time.perf_counter()
        messages, tools, options = self._call(request)
        if tools:
            responses = await self._tool_llm.astream_chat_with_tools(tools, chat_history=messages, **options)
        else:
            responses = await self.llm.astream_chat(messages)
        last: ChatResponse | None = None
        streamed = ""
        async for last in responses:
            if last.delta:
                streamed += last.delta
                yield Delta(text=last.delta, member=self.name)
        for delta in self._stream_end(last, streamed, time.perf_counter() - start):
            yield delta

    # translation --------------------------------------------------------------------------------------------
    @property
    def _tool_llm(self) -> FunctionCallingLLM:
        assert isinstance(self.llm, FunctionCallingLLM)
        return self.llm

    def _call(self, request: Request) -> tuple[list[ChatMessage], list[SpecTool], dict[str, Any]]:
        """The wrapped LLM's messages, tools and tool options for a request; tools need a function-calling
        LLM."""
        messages = to_llama_messages(request.messages)
        if not request.tools or request.tool_choice == "none":
            return messages, [], {}
        if not self.supports_tools:
            raise CapabilityError(
                f"member {self.name!r} wraps {type(self.llm).__name__}, which is not a function-calling "
                "LLM, but the request offers tools: wrap a FunctionCallingLLM, or leave this member out of "
                "tool calls"
            )
        options: dict[str, Any] = {"allow_parallel_tool_calls": True}
        if request.tool_choice == "required":
            options["tool_required"] = True
        elif request.tool_choice not in (None, "auto"):
            options["tool_choice"] = request.tool_choice
        return messages, [SpecTool(spec) for spec in request.tools], options

    def _tool_calls(self, response: ChatResponse) -> list[ToolCall]:
        if not self.supports_tools:
            return []
        selections = self._tool_llm.get_tool_calls_from_response(response, error_on_no_tool_call=False)
        calls = []
        for selection in selections:
            call = ToolCall(name=selection.tool_name, arguments=selection.tool_kwargs)
            calls.append(call.model_copy(update={"id": selection.tool_id}) if selection.tool_id else call)
        return calls

    def _generation(self, response: ChatResponse, latency_s: float) -> Generation:
        calls = self._tool_calls(response)
        prompt_tokens, completion_tokens = get_tokens_from_response(response)
        return Generation(
            member=self.name,
            text=response.message.content or "",
            tool_calls=calls,
            usage=Usage(input_tokens=prompt_tokens, output_tokens=completion_tokens),
            latency_s=latency_s,
            finish_reason="tool_calls" if calls else "stop",
            prompt_format="llamaindex",
        )

    def _stream_end(self, last: ChatResponse | None, streamed: str, latency_s: float) -> Iterator[Delta]:
        """After the text deltas: text the LLM put in its last message without a delta (streams that do not
        stream), the tool calls of the last response, then the final delta with usage."""
        generation = self._generation(last or ChatResponse(message=ChatMessage(role="assistant")), latency_s)
        missing = generation.text[len(streamed) :] if generation.text.startswith(streamed) else ""
        if missing or generation.tool_calls:
            yield Delta(
                text=missing, tool_call_chunks=tool_calls_to_chunks(generation.tool_calls), member=self.name
            )
        yield Delta(
            member=self.name, final=True, finish_reason=generation.finish_reason, usage=generation.usage
        )


def wrap_members(members: Sequence[Member | LLM]) -> list[Member]:
    """Engine members as they are; LlamaIndex LLMs wrapped in `LlamaIndexMember`."""
    return [m if isinstance(m, Member) else LlamaIndexMember(m) for m in members]
