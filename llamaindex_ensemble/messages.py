"""Translation between LlamaIndex and the engine: `ChatMessage` <-> `Message`, `BaseTool` -> `ToolSpec`,
`ToolCall` <-> `ToolCallBlock` / `ToolSelection`. Used by `EnsembleLLM` and `LlamaIndexMember` alike."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from llama_index.core.base.llms.types import (
    CachePoint,
    ChatMessage,
    MessageRole,
    TextBlock,
    ThinkingBlock,
    ToolCallBlock,
)
from llama_index.core.llms.llm import ToolSelection
from llama_index.core.llms.utils import parse_partial_json
from llama_index.core.tools.types import BaseTool, ToolMetadata
from pydantic import ValidationError

from ensemble_core.errors import CapabilityError, ConfigError
from ensemble_core.types import Message, Role, ToolCall, ToolSpec

_ROLES: dict[MessageRole, Role] = {
    MessageRole.SYSTEM: "system",
    MessageRole.DEVELOPER: "system",
    MessageRole.USER: "user",
    MessageRole.ASSISTANT: "assistant",
    MessageRole.CHATBOT: "assistant",
    MessageRole.MODEL: "assistant",
    MessageRole.TOOL: "tool",
    MessageRole.FUNCTION: "tool",
}

# Blocks that carry nothing a text member should read: reasoning traces and prompt-cache markers.
_SKIPPED_BLOCKS = (ThinkingBlock, CachePoint)


# LlamaIndex -> engine ---------------------------------------------------------------------------------------
def to_engine_messages(messages: Sequence[ChatMessage]) -> list[Message]:
    """LlamaIndex chat messages as engine messages; non-text content (images, audio, documents) is an
    error."""
    return [to_engine_message(message, position) for position, message in enumerate(messages)]


def to_engine_message(message: ChatMessage, position: int = 0) -> Message:
    role = _ROLES[MessageRole(message.role)]
    texts: list[str] = []
    calls: list[ToolCall] = []
    for block in message.blocks:
        if isinstance(block, TextBlock):
            texts.append(block.text)
        elif isinstance(block, ToolCallBlock):
            calls.append(tool_call_from_block(block))
        elif not isinstance(block, _SKIPPED_BLOCKS):
            raise CapabilityError(
                f"message {position} ({role}) holds a {type(block).__name__}: ensemble members read text "
                "only; describe the content in text (e.g. a caption or the extracted text) or send it to a "
                "multimodal LLM directly"
            )
    if role == "tool":
        return Message(role="tool", content="\n".join(texts), tool_call_id=_tool_call_id(message, position))
    return Message(role=role, content="\n".join(texts), tool_calls=calls if role == "assistant" else [])


def _tool_call_id(message: ChatMessage, position: int) -> str:
    call_id = message.additional_kwargs.get("tool_call_id")
    if not call_id:
        raise ConfigError(
            f"message {position} is a tool result without a tool_call_id: set "
            "additional_kwargs={'tool_call_id': <the id of the ToolCallBlock it answers>}"
        )
    return str(call_id)


def tool_call_from_block(block: ToolCallBlock) -> ToolCall:
    """A whole tool call from a `ToolCallBlock` (arguments as a dict or a JSON string)."""
    arguments = _arguments(block.tool_kwargs)
    call = ToolCall(name=block.tool_name, arguments=arguments)
    return call.model_copy(update={"id": block.tool_call_id}) if block.tool_call_id else call


def _arguments(kwargs: dict[str, Any] | str) -> dict[str, Any]:
    """Tool arguments as a dict; a JSON string may be partial (mid-stream), so it is parsed leniently."""
    if isinstance(kwargs, dict):
        return kwargs
    try:
        parsed = parse_partial_json(kwargs) if kwargs.strip() else {}
    except (ValueError, TypeError):
        return {}
    return parsed if isinstance(parsed, dict) else {}


def to_tool_spec(tool: BaseTool) -> ToolSpec:
    """A LlamaIndex tool's name, description and JSON-schema parameters as an engine `ToolSpec`."""
    metadata = tool.metadata
    try:
        return ToolSpec(
            name=metadata.get_name(),
            description=metadata.description,
            parameters=metadata.get_parameters_dict(),
        )
    except ValidationError as err:
        raise ConfigError(
            f"tool {metadata.name!r} cannot be offered to the ensemble: {err.errors()[0]['msg']}; tool names "
            "are 1-64 letters, digits, '_', '-' or '.' (set FunctionTool.from_defaults(fn, name=...))"
        ) from err


def to_tool_choice(tool_choice: str | dict[str, Any] | None, tool_required: bool) -> str | None:
    """OpenAI-style tool_choice ("auto", "none", "required", a tool name, or a function dict) as a string."""
    if isinstance(tool_choice, dict):
        return str(tool_choice.get("function", tool_choice).get("name"))
    if tool_choice is None and tool_required:
        return "required"
    return tool_choice


# engine -> LlamaIndex ---------------------------------------------------------------------------------------
def to_llama_messages(messages: Sequence[Message]) -> list[ChatMessage]:
    """Engine messages as LlamaIndex chat messages (tool calls as `ToolCallBlock`s, tool ids in
    additional_kwargs)."""
    return [to_llama_message(m) for m in messages]


def to_llama_message(message: Message) -> ChatMessage:
    if message.role == "tool":
        return ChatMessage(
            role=MessageRole.TOOL,
            content=message.content,
            additional_kwargs={"tool_call_id": message.tool_call_id},
        )
    return chat_message(message.content, message.tool_calls, role=MessageRole(message.role))


def chat_message(
    text: str, tool_calls: Sequence[ToolCall] = (), role: MessageRole = MessageRole.ASSISTANT
) -> ChatMessage:
    """A chat message (by default the assistant's) holding the text, always, possibly empty, and one
    `ToolCallBlock` per tool call."""
    blocks: list[Any] = [TextBlock(text=text)]
    blocks.extend(tool_call_block(call) for call in tool_calls)
    return ChatMessage(role=role, blocks=blocks)


def tool_call_block(call: ToolCall) -> ToolCallBlock:
    return ToolCallBlock(tool_call_id=call.id, tool_name=call.name, tool_kwargs=call.arguments)


def tool_selections(message: ChatMessage) -> list[ToolSelection]:
    """The tool calls in a message's `ToolCallBlock`s, as the `ToolSelection`s agents execute."""
    return [
        ToolSelection(
            tool_id=block.tool_call_id or "",
            tool_name=block.tool_name,
            tool_kwargs=_arguments(block.tool_kwargs),
        )
        for block in message.blocks
        if isinstance(block, ToolCallBlock)
    ]


class SpecTool(BaseTool):
    """An engine `ToolSpec` as a LlamaIndex tool description, to hand a request's tools to a wrapped
    function-calling LLM. It describes a tool; calling it is the caller's business, so it cannot be called."""

    def __init__(self, spec: ToolSpec):
        self._metadata = _SpecMetadata(
            description=spec.description, name=spec.name, fn_schema=None, parameters=spec.parameters
        )

    @property
    def metadata(self) -> ToolMetadata:
        return self._metadata

    def __call__(self, input: Any) -> Any:
        raise TypeError(
            f"tool {self._metadata.name!r} only describes a call; the agent that asked for it runs it"
        )


@dataclass
class _SpecMetadata(ToolMetadata):
    """Tool metadata whose parameters are a given JSON schema rather than a pydantic model's."""

    parameters: dict[str, Any] = field(default_factory=dict)

    def get_parameters_dict(self) -> dict[str, Any]:
        return self.parameters
