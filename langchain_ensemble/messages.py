"""Translation between LangChain messages and the engine's types, both ways: LangChain messages -> engine
`Message`s (for `EnsembleChatModel`), engine `Message`s -> LangChain messages (for `LangChainMember`), and an
engine `Result` / `Delta` -> `AIMessage` / `AIMessageChunk`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.messages.ai import UsageMetadata
from langchain_core.messages.tool import invalid_tool_call, tool_call, tool_call_chunk

from ensemble_core.errors import CapabilityError
from ensemble_core.types import Delta, Message, Result, ToolCall, ToolCallChunk, Trace, Usage

_ROLES = {"system": "system", "human": "user", "ai": "assistant", "tool": "tool"}
_CHAT_ROLES = {
    "system": "system",
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "ai": "assistant",
}
# Content blocks that carry no text for the model but are no reason to refuse the message: an AI turn's tool
# calls are read from `tool_calls`, and reasoning traces are the previous answer's private scratch work.
_SKIPPED_BLOCKS = {"tool_use", "tool_call", "tool_call_chunk", "function_call", "thinking", "reasoning"}


# LangChain -> engine
# ---------------------------------------------------------------------------------------------
def to_engine_messages(messages: Sequence[BaseMessage]) -> list[Message]:
    """LangChain messages -> engine messages; text content blocks are joined, anything else is refused."""
    return [to_engine_message(m, position) for position, m in enumerate(messages)]


def to_engine_message(message: BaseMessage, position: int = 0) -> Message:
    text = content_text(message.content, f"message {position} ({message.type})")
    if isinstance(message, ChatMessage):
        role = _CHAT_ROLES.get(message.role)
        if role is None:
            raise CapabilityError(
                f"message {position} has the chat role {message.role!r}; use one of: "
                f"{', '.join(sorted(_CHAT_ROLES))} (or a ToolMessage for tool results)"
            )
        return Message(role=role, content=text, name=message.name)
    role = _ROLES.get(message.type)
    if role is None:
        raise CapabilityError(
            f"message {position} is a {type(message).__name__}, which the ensemble cannot take; use System, "
            "Human, AI or Tool messages"
        )
    if isinstance(message, AIMessage):
        calls = [
            ToolCall(name=c["name"], arguments=c["args"], **({"id": c["id"]} if c.get("id") else {}))
            for c in message.tool_calls
        ]
        return Message(role="assistant", content=text, tool_calls=calls, name=message.name)
    if isinstance(message, ToolMessage):
        return Message(role="tool", content=text, tool_call_id=message.tool_call_id, name=message.name)
    return Message(role=role, content=text, name=message.name)


def content_text(content: str | list[Any], where: str) -> str:
    """The text of a message's content: a string, or a list of strings and text blocks joined together.

    Images, audio, files and other non-text blocks raise a `CapabilityError`: the ensemble's members take
    text, and silently dropping an image would answer a different question than the one asked.
    """
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
            continue
        kind = block.get("type")
        if kind == "text":
            parts.append(block.get("text", ""))
        elif kind not in _SKIPPED_BLOCKS:
            raise CapabilityError(
                f"{where} has a {kind!r} content block; the ensemble's members take text only: send text "
                "(for an image, a description or OCR of it), or use a multimodal chat model instead"
            )
    return "".join(parts)


# engine -> LangChain
# ---------------------------------------------------------------------------------------------
def to_langchain_messages(messages: Sequence[Message]) -> list[BaseMessage]:
    """Engine messages -> LangChain messages (what a wrapped LangChain chat model is given)."""
    out: list[BaseMessage] = []
    for m in messages:
        if m.role == "system":
            out.append(SystemMessage(m.content))
        elif m.role == "user":
            out.append(HumanMessage(m.content, name=m.name))
        elif m.role == "assistant":
            calls = [tool_call(name=c.name, args=c.arguments, id=c.id) for c in m.tool_calls]
            out.append(AIMessage(m.content, tool_calls=calls))
        else:
            out.append(ToolMessage(m.content, tool_call_id=m.tool_call_id or "", name=m.name))
    return out


def usage_metadata(usage: Usage) -> UsageMetadata:
    return {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
    }


def response_metadata(model_name: str, finish_reason: str | None, trace: Trace | None) -> dict[str, Any]:
    """`model_name`, `finish_reason` and the ensemble trace as a plain dict (JSON-safe; holds no secrets)."""
    metadata: dict[str, Any] = {"model_name": model_name, "finish_reason": finish_reason or "stop"}
    if trace is not None:
        metadata["ensemble_trace"] = trace.model_dump(mode="json")
    return metadata


def result_to_message(result: Result, model_name: str) -> AIMessage:
    """The answer as an `AIMessage`: text, tool calls, and the calls a member began but did not finish
    validly as `invalid_tool_calls` (with what it wrote and why)."""
    return AIMessage(
        content=result.text,
        tool_calls=[tool_call(name=c.name, args=c.arguments, id=c.id) for c in result.tool_calls],
        invalid_tool_calls=[
            invalid_tool_call(name=c.name, args=c.arguments, id=None, error=c.error)
            for c in result.invalid_tool_calls
        ],
        usage_metadata=usage_metadata(result.usage),
        response_metadata=response_metadata(model_name, result.finish_reason, result.trace),
    )


def delta_to_chunk(delta: Delta, model_name: str) -> AIMessageChunk:
    """One streamed delta -> one chunk. Only the final delta carries usage (input tokens once per stream),
    `model_name` and the trace, and it is marked as the last chunk."""
    chunks = [
        tool_call_chunk(name=c.name, args=c.arguments, id=c.id, index=c.index) for c in delta.tool_call_chunks
    ]
    if not delta.final:
        return AIMessageChunk(content=delta.text, tool_call_chunks=chunks)
    return AIMessageChunk(
        content=delta.text,
        tool_call_chunks=chunks,
        usage_metadata=usage_metadata(delta.usage or Usage()),
        response_metadata=response_metadata(model_name, delta.finish_reason, delta.trace),
        chunk_position="last",
    )


def chunk_to_delta(chunk: AIMessageChunk, member: str) -> Delta:
    """A LangChain stream chunk -> an engine delta (text and tool-call fragments; usage is summed
    separately)."""
    return Delta(
        text=chunk.text,
        tool_call_chunks=[
            ToolCallChunk(
                index=c.get("index") or 0, id=c.get("id"), name=c.get("name"), arguments=c.get("args") or ""
            )
            for c in chunk.tool_call_chunks
        ],
        member=member,
    )
