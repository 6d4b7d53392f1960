"""LangChainMember: any LangChain chat model as an ensemble member, mixed with engine members."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel, GenericFakeChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.tools import tool
from pydantic import Field

from ensemble_core import Ensemble
from ensemble_core.errors import CapabilityError
from ensemble_core.members.scripted import ScriptedMember
from langchain_ensemble import EnsembleChatModel, LangChainMember


class ToolFake(BaseChatModel):
    """A tool-calling LangChain model: calls its first bound tool, reports usage, records what it was
    given."""

    seen: list[dict[str, Any]] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "tool-fake"

    def bind_tools(self, tools: Any, *, tool_choice: str | None = None, **kwargs: Any) -> Any:
        return self.bind(tools=tools, tool_choice=tool_choice, **kwargs)

    def _reply(self, messages: list[BaseMessage], kwargs: dict[str, Any]) -> AIMessage:
        self.seen.append({"messages": messages, **kwargs})
        usage = {"input_tokens": 11, "output_tokens": 4, "total_tokens": 15}
        if kwargs.get("tools"):
            name = kwargs["tools"][0]["function"]["name"]
            return AIMessage(
                "", tool_calls=[{"name": name, "args": {"input": 3}, "id": "lc-1"}], usage_metadata=usage
            )
        return AIMessage("from langchain", usage_metadata=usage)

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> ChatResult:
        return ChatResult(
            generations=[ChatGeneration(message=self._reply(messages, {"stop": stop, **kwargs}))]
        )

    def _stream(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> Iterator[ChatGenerationChunk]:
        reply = self._reply(messages, {"stop": stop, **kwargs})
        if reply.tool_calls:
            call = reply.tool_calls[0]
            yield ChatGenerationChunk(
                message=AIMessageChunk(
                    "",
                    tool_call_chunks=[
                        tool_call_chunk(name=call["name"], args='{"inp', id=call["id"], index=0)
                    ],
                )
            )
            yield ChatGenerationChunk(
                message=AIMessageChunk("", tool_call_chunks=[tool_call_chunk(args='ut": 3}', index=0)])
            )
        else:
            for word in ("from", " langchain"):
                yield ChatGenerationChunk(message=AIMessageChunk(word))
        yield ChatGenerationChunk(message=AIMessageChunk("", usage_metadata=reply.usage_metadata))


@tool
def magic_function(input: int) -> int:
    """Apply a magic function to an input."""
    return input + 2


def test_wraps_a_langchain_model_with_its_name_and_usage():
    fake = ToolFake()
    member = LangChainMember(fake)
    assert member.name == "tool-fake" and member.supports_tools and member.supports_tool_choice
    chat = EnsembleChatModel(members=[ScriptedMember("down", [RuntimeError("x")]), member])
    message = chat.invoke("hi", stop=["END"])
    assert message.content == "from langchain"
    assert message.usage_metadata == {"input_tokens": 11, "output_tokens": 4, "total_tokens": 15}
    assert fake.seen[-1]["stop"] == ["END"]


def test_langchain_models_passed_as_members_are_wrapped():
    chat = EnsembleChatModel(members=[ToolFake(), ScriptedMember("local", ["x"])])
    assert isinstance(chat.ensemble.members["tool-fake"], LangChainMember)


def test_tool_calls_pass_through_as_produced_with_tool_choice():
    fake = ToolFake()
    chat = EnsembleChatModel(members=[LangChainMember(fake, name="remote")])
    message = chat.bind_tools([magic_function], tool_choice="any").invoke("magic_function(3)?")
    assert message.tool_calls == [
        {"name": "magic_function", "args": {"input": 3}, "id": "lc-1", "type": "tool_call"}
    ]
    assert fake.seen[-1]["tool_choice"] == "any"
    assert fake.seen[-1]["tools"][0]["function"]["name"] == "magic_function"


async def test_streams_text_and_tool_call_fragments_from_the_wrapped_model():
    chat = EnsembleChatModel(members=[LangChainMember(ToolFake())])
    chunks = [c async for c in chat.astream("hi")]
    assert [c.content for c in chunks if c.content] == ["from", " langchain"]
    assert chunks[-1].usage_metadata["input_tokens"] == 11
    full = None
    async for chunk in chat.bind_tools([magic_function]).astream("call it"):
        full = chunk if full is None else full + chunk
    assert full.tool_calls == [
        {"name": "magic_function", "args": {"input": 3}, "id": "lc-1", "type": "tool_call"}
    ]


def test_a_model_without_tool_calling_refuses_tools_and_the_ensemble_falls_back():
    plain = LangChainMember(GenericFakeChatModel(messages=iter(["never"])), name="plain")
    assert not plain.supports_tools
    scripted = ScriptedMember("scripted", ["no call needed"])
    chat = EnsembleChatModel(members=[plain, scripted])
    message = chat.bind_tools([magic_function]).invoke("hi")
    assert message.content == "no call needed"
    failed = message.response_metadata["ensemble_trace"]["calls"][0]
    assert failed["member"] == "plain" and "no tool calling" in failed["error"]


def test_mixes_with_a_local_hf_member(tiny_member):
    fake = LangChainMember(GenericFakeChatModel(messages=iter(["from the fake"])), name="fake")
    ensemble = Ensemble([fake, tiny_member], "fallback")
    chat = EnsembleChatModel(ensemble=ensemble, max_tokens=4)
    assert chat.invoke("hi").content == "from the fake"
    local = chat.invoke("hi", model="tiny")
    assert local.response_metadata["model_name"] == "single[tiny]"
    assert local.usage_metadata["output_tokens"] >= 1


def test_only_chat_models_can_be_wrapped():
    with pytest.raises(CapabilityError, match="BaseChatModel"):
        LangChainMember("gpt-4o")  # type: ignore[arg-type]


async def test_a_wrapped_models_own_tokens_do_not_reach_the_callers_stream_twice():
    from langgraph.graph import END, START, MessagesState, StateGraph

    fake = GenericFakeChatModel(messages=iter(["alpha beta"]))
    chat = EnsembleChatModel(members=[LangChainMember(fake, name="fake")])

    async def answer(state: MessagesState) -> dict[str, Any]:
        return {"messages": [await chat.ainvoke(state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("answer", answer)
    graph.add_edge(START, "answer")
    graph.add_edge("answer", END)
    pieces = [
        chunk.content
        async for chunk, _ in graph.compile().astream({"messages": [("user", "hi")]}, stream_mode="messages")
        if chunk.content
    ]
    assert pieces == ["alpha", " ", "beta"]
