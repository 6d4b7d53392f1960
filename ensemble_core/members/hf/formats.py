"""Prompt formats for local models: the chat template when the model has one, a plain Question/Answer format
for base models without one, and tool descriptions for templates that cannot render tools."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ensemble_core.types import Message, ToolSpec

PLAIN_STOP = ["\nQuestion:", "\nUser:"]


def template_messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """Messages as the dicts that Hugging Face chat templates read (OpenAI-style tool calls)."""
    out: list[dict[str, Any]] = []
    for m in messages:
        entry: dict[str, Any] = {"role": m.role, "content": m.content}
        if m.tool_calls:
            entry["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in m.tool_calls
            ]
        if m.role == "tool":
            entry["tool_call_id"] = m.tool_call_id
            if m.name:
                entry["name"] = m.name
        out.append(entry)
    return out


def plain_prompt(messages: Sequence[Message]) -> str:
    """A base model's prompt: system text first, then Question/Answer turns, ending with an open Answer.

    Tool results and tool calls are written as text so a base model still sees the whole thread.
    """
    parts: list[str] = []
    system = "\n".join(m.content for m in messages if m.role == "system").strip()
    if system:
        parts.append(system + "\n")
    for m in messages:
        if m.role == "user":
            parts.append(f"Question: {m.content.strip()}")
        elif m.role == "assistant":
            said = m.content.strip() or "; ".join(
                f"called {c.name}({json.dumps(c.arguments)})" for c in m.tool_calls
            )
            parts.append(f"Answer: {said}")
        elif m.role == "tool":
            parts.append(f"Tool result: {m.content.strip()}")
    parts.append("Answer:")
    return "\n".join(parts)


def tools_system_text(tools: Sequence[ToolSpec]) -> str:
    """Tool descriptions and the call format (Hermes / Qwen2.5 tags), with a call to the first tool as a
    worked example, for models whose template cannot render tools."""
    specs = "\n".join(json.dumps(t.as_openai()["function"], ensure_ascii=False) for t in tools)
    example = json.dumps({"name": tools[0].name, "arguments": example_arguments(tools[0].parameters)})
    return (
        f"You can call these tools:\n<tools>\n{specs}\n</tools>\nTo call a tool, answer with nothing but the "
        "tool's name and its arguments as a JSON object between <tool_call> tags, for example:\n"
        f"<tool_call>\n{example}\n</tool_call>"
    )


_EXAMPLES: dict[str, Any] = {"string": "...", "integer": 1, "number": 1.5, "boolean": True, "array": []}


def example_arguments(parameters: dict[str, Any]) -> dict[str, Any]:
    """Arguments of the right shape for a tool's parameter schema (its required ones, or all): an example
    value of each one's type, its first enum value, its default."""
    properties: dict[str, Any] = parameters.get("properties") or {}
    names = parameters.get("required") or list(properties)
    out: dict[str, Any] = {}
    for name in names:
        spec = properties.get(name) or {}
        if "enum" in spec and spec["enum"]:
            out[name] = spec["enum"][0]
        elif "default" in spec:
            out[name] = spec["default"]
        elif spec.get("type") == "object":
            out[name] = example_arguments(spec)
        else:
            kind = spec.get("type")
            out[name] = _EXAMPLES.get(kind if isinstance(kind, str) else "string", "...")
    return out


def with_tools_in_system(messages: Sequence[Message], tools: Sequence[ToolSpec]) -> list[Message]:
    """Prepend the tool description to the system message (or add one)."""
    text = tools_system_text(tools)
    if messages and messages[0].role == "system":
        first = messages[0].model_copy(update={"content": f"{messages[0].content}\n\n{text}".strip()})
        return [first, *messages[1:]]
    return [Message(role="system", content=text), *messages]
