"""`LlamaIndexMember`: a LlamaIndex LLM as an ensemble member, next to engine members; text and tools, sync,
async and streaming; usage read from the wrapped LLM's raw response."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    LLMMetadata,
    MessageRole,
    ToolCallBlock,
)
from llama_index.core.llms import MockLLM
from llama_index.core.llms.mock import MockFunctionCallingLLM

from ensemble_core import CapabilityError, Message, Request, ToolCall, ToolSpec
from ensemble_core.members.scripted import ScriptedMember
from llamaindex_ensemble import EnsembleLLM, LlamaIndexMember

MULTIPLY = ToolSpec(
    name="multiply",
    description="Multiply two integers.",
    parameters={
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
        "required": ["a", "b"],
    },
)


class EchoLLM(MockLLM):
    """A non-function-calling LLM that answers with the last message's text and reports usage in `raw`; its
    "stream" is the whole answer in one response without a delta."""

    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        text = f"echo: {messages[-1].content}"
        raw = {"usage": {"prompt_tokens": 11, "completion_tokens": 3}}
        return ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=text), raw=raw)

    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> Iterator[ChatResponse]:
        yield self.chat(messages)


def calling_llm() -> MockFunctionCallingLLM:
    """A function-calling LLM that calls `multiply(6, 7)` when offered tools, and records what it was sent."""
    seen: list[dict[str, Any]] = []

    def respond(messages: Sequence[ChatMessage], **kwargs: Any) -> ChatMessage:
        seen.append({"messages": list(messages), **kwargs})
        if messages[-1].role == MessageRole.TOOL:
            return ChatMessage(role=MessageRole.ASSISTANT, content=f"It is {messages[-1].content}.")
        if kwargs.get("tools"):
            block = ToolCallBlock(
                tool_call_id="t1", tool_name=kwargs["tools"][0].metadata.name, tool_kwargs={"a": 6, "b": 7}
            )
            return ChatMessage(role=MessageRole.ASSISTANT, blocks=[block])
        return ChatMessage(role=MessageRole.ASSISTANT, content="plain answer")

    llm = MockFunctionCallingLLM(response_generator=respond)
    llm.__dict__["seen"] = seen
    return llm


def request(text: str = "hello", tools: list[ToolSpec] | None = None) -> Request:
    return Request(messages=[Message(role="user", content=text)], tools=tools or [])


def test_name_context_window_and_tool_support_come_from_the_llm():
    member = LlamaIndexMember(MockLLM(max_tokens=8))
    assert member.name == "unknown" and member.model_name == "unknown"
    assert member.context_window == MockLLM().metadata.context_window
    assert not member.supports_tools
    assert LlamaIndexMember(calling_llm(), name="caller").supports_tools


def test_a_model_name_becomes_a_valid_member_name():
    class Named(MockLLM):
        @property
        def metadata(self) -> LLMMetadata:
            return LLMMetadata(model_name="org/model:7b-q4")

    member = LlamaIndexMember(Named())
    assert member.name == "org_model_7b-q4" and member.model_name == "org/model:7b-q4"


def test_generate_returns_text_and_the_usage_the_llm_reported():
    generation = LlamaIndexMember(EchoLLM(), name="echo").generate(request("hi"))
    assert generation.text == "echo: hi" and generation.member == "echo"
    assert (generation.usage.input_tokens, generation.usage.output_tokens) == (11, 3)


async def test_agenerate_and_streams_agree_with_generate():
    member = LlamaIndexMember(MockLLM(), name="mock")
    expected = member.generate(request("the same text")).text
    assert (await member.agenerate(request("the same text"))).text == expected
    for deltas in (
        list(member.stream(request("the same text"))),
        [d async for d in member.astream(request("the same text"))],
    ):
        assert "".join(d.text for d in deltas) == expected
        assert deltas[-1].final and deltas[-1].finish_reason == "stop"


def test_a_stream_that_does_not_stream_still_gives_its_text():
    member = LlamaIndexMember(EchoLLM(), name="echo")
    deltas = list(member.stream(request("hi")))
    assert "".join(d.text for d in deltas) == "echo: hi" and deltas[-1].usage.input_tokens == 11


def test_tools_go_through_the_function_calling_api():
    llm = calling_llm()
    member = LlamaIndexMember(llm, name="caller")
    generation = member.generate(request("6 times 7?", tools=[MULTIPLY]))
    assert generation.tool_calls == [ToolCall(id="t1", name="multiply", arguments={"a": 6, "b": 7})]
    assert generation.finish_reason == "tool_calls"
    (tool,) = llm.seen[-1]["tools"]
    assert tool.metadata.get_parameters_dict() == MULTIPLY.parameters
    assert tool.metadata.to_openai_tool()["function"]["name"] == "multiply"


async def test_tool_calls_stream_and_tool_results_go_back():
    llm = calling_llm()
    member = LlamaIndexMember(llm, name="caller")
    deltas = [d async for d in member.astream(request("6 times 7?", tools=[MULTIPLY]))]
    chunks = [c for d in deltas for c in d.tool_call_chunks]
    assert [(c.name, c.arguments) for c in chunks] == [("multiply", '{"a": 6, "b": 7}')]
    follow_up = Request(
        messages=[
            Message(role="user", content="6 times 7?"),
            Message(
                role="assistant", tool_calls=[ToolCall(id="t1", name="multiply", arguments={"a": 6, "b": 7})]
            ),
            Message(role="tool", content="42", tool_call_id="t1"),
        ],
        tools=[MULTIPLY],
    )
    assert (await member.agenerate(follow_up)).text == "It is 42."
    sent = llm.seen[-1]["messages"]
    assert sent[-1].additional_kwargs == {"tool_call_id": "t1"}
    assert [b.tool_name for b in sent[1].blocks if isinstance(b, ToolCallBlock)] == ["multiply"]


def test_tools_for_a_llm_that_cannot_call_them_are_a_clear_error():
    member = LlamaIndexMember(MockLLM(), name="plain")
    with pytest.raises(CapabilityError, match="'plain' wraps MockLLM.*not a function-calling LLM"):
        member.generate(request("q", tools=[MULTIPLY]))
    assert member.generate(Request(messages=request().messages, tools=[MULTIPLY], tool_choice="none")).text


def test_mixed_with_engine_members_in_one_ensemble():
    """Fallback over a LlamaIndex LLM that cannot take tools and a scripted member: the tool request falls
    through to the scripted member, and the trace says why."""
    llm = EnsembleLLM(
        members=[MockLLM(), ScriptedMember("scripted", [ToolCall(name="multiply")])], strategy="fallback"
    )
    assert isinstance(llm.ensemble.members["unknown"], LlamaIndexMember)
    assert not llm.metadata.is_function_calling_model
    response = llm.chat([ChatMessage(role=MessageRole.USER, content="q")], tools=[MULTIPLY])
    assert llm.get_tool_calls_from_response(response)[0].tool_name == "multiply"
    failed, answered = response.raw["trace"].calls
    assert not failed.ok and "not a function-calling LLM" in failed.error and answered.member == "scripted"


def test_an_ensemble_llm_can_be_a_member_of_another():
    inner = EnsembleLLM(members=[ScriptedMember("deep", ["from inside"])])
    outer = EnsembleLLM(members=[LlamaIndexMember(inner, name="inner")])
    assert outer.complete("q").text == "from inside"
    assert outer.metadata.is_function_calling_model
