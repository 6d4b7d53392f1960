"""Tools and tool choice between LangChain and the engine. The engine speaks OpenAI's vocabulary for
`tool_choice` ("auto", "none", "required", or a tool name); LangChain's ("any", True, a name, an OpenAI dict)
is mapped onto it here and back again for wrapped LangChain models."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.utils.function_calling import convert_to_openai_tool

from ensemble_core.ensemble import to_tool_spec
from ensemble_core.errors import ConfigError
from ensemble_core.types import ToolSpec

ENGINE_CHOICES = ("auto", "none", "required")


def to_openai_tools(tools: Sequence[Any], strict: bool | None = None) -> list[dict[str, Any]]:
    """Any tool LangChain accepts (BaseTool, function, pydantic/TypedDict class, JSON schema, OpenAI dict)."""
    return [convert_to_openai_tool(t, strict=strict) for t in tools]


def to_tool_specs(tools: Sequence[dict[str, Any]]) -> list[ToolSpec]:
    return [to_tool_spec(t) for t in tools]


def engine_tool_choice(choice: Any, tool_names: Sequence[str]) -> str | None:
    """LangChain's `tool_choice` -> the engine's; a name that is not among the tools is an error."""
    if choice is None or choice is False:
        return None
    if choice is True or choice == "any":
        return "required"
    if isinstance(choice, dict):
        choice = (choice.get("function") or {}).get("name") or choice.get("name")
    if not isinstance(choice, str):
        raise ConfigError(
            f"tool_choice={choice!r} is not understood; use 'auto', 'none', 'any', or a tool's name"
        )
    if choice in ENGINE_CHOICES:
        return choice
    if choice not in tool_names:
        raise ConfigError(
            f"tool_choice={choice!r} names no bound tool; the tools are: "
            f"{', '.join(tool_names) or '(none)'}; or use 'auto', 'none' or 'any'"
        )
    return choice


def langchain_tool_choice(choice: str | None) -> str | None:
    """The engine's `tool_choice` -> LangChain's, for a wrapped LangChain chat model's `bind_tools`."""
    return "any" if choice == "required" else choice
