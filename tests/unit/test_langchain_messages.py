"""Message translation between LangChain and the engine."""

from __future__ import annotations

import pytest
from langchain_core.messages import (
    AIMessage,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)

from ensemble_core.errors import CapabilityError
from ensemble_core.types import Message, ToolCall
from langchain_ensemble.messages import to_engine_messages, to_langchain_messages


def test_roles_tool_calls_and_names_translate():
    messages = to_engine_messages(
        [
            SystemMessage("sys"),
            HumanMessage("hello", name="example_user"),
            AIMessage(
                [
                    {"type": "text", "text": "let me add"},
                    {"type": "tool_use", "id": "t1", "name": "add", "input": {"a": 1}},
                ],
                tool_calls=[{"name": "add", "args": {"a": 1}, "id": "t1", "type": "tool_call"}],
            ),
            ToolMessage('{"result": 3}', tool_call_id="t1", name="add", status="error"),
            ChatMessage(role="assistant", content="done"),
        ]
    )
    assert [m.role for m in messages] == ["system", "user", "assistant", "tool", "assistant"]
    assert messages[1].name == "example_user"
    assert messages[2].content == "let me add"
    assert messages[2].tool_calls == [ToolCall(id="t1", name="add", arguments={"a": 1})]
    assert (messages[3].tool_call_id, messages[3].content) == ("t1", '{"result": 3}')


def test_text_blocks_are_joined():
    [message] = to_engine_messages([HumanMessage(["Hello, ", {"type": "text", "text": "world"}])])
    assert message.content == "Hello, world"


@pytest.mark.parametrize(
    "block",
    [
        {"type": "image", "base64": "AAAA", "mime_type": "image/png"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        {"type": "file", "base64": "AAAA", "mime_type": "application/pdf"},
    ],
)
def test_images_and_files_are_refused_with_a_clear_error(block):
    with pytest.raises(
        CapabilityError, match=rf"message 0 \(human\) has a '{block['type']}' content block.*text only"
    ):
        to_engine_messages([HumanMessage([{"type": "text", "text": "describe"}, block])])


def test_unsupported_roles_are_refused():
    with pytest.raises(CapabilityError, match="FunctionMessage"):
        to_engine_messages([FunctionMessage("x", name="f")])
    with pytest.raises(CapabilityError, match="chat role 'narrator'"):
        to_engine_messages([ChatMessage(role="narrator", content="x")])


def test_engine_messages_become_langchain_messages():
    converted = to_langchain_messages(
        [
            Message(role="system", content="sys"),
            Message(role="user", content="q"),
            Message(role="assistant", tool_calls=[ToolCall(id="c1", name="f", arguments={"x": 1})]),
            Message(role="tool", content="1", tool_call_id="c1", name="f"),
        ]
    )
    assert [m.type for m in converted] == ["system", "human", "ai", "tool"]
    assert converted[2].tool_calls == [{"name": "f", "args": {"x": 1}, "id": "c1", "type": "tool_call"}]
    assert converted[3].tool_call_id == "c1"
    assert to_engine_messages(converted)[2].tool_calls == [ToolCall(id="c1", name="f", arguments={"x": 1})]
