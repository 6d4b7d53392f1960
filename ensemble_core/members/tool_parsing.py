"""Tool calls parsed from a local model's text output: Hermes `<tool_call>{...}</tool_call>` blocks, or an
answer that is nothing but a JSON object with `name` and `arguments`."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from ensemble_core.types import ToolCall, ToolSpec

_BLOCK = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)


def parse_tool_calls(text: str, tools: Sequence[ToolSpec]) -> tuple[str, list[ToolCall]]:
    """Split `text` into (remaining prose, tool calls). Only calls to offered tools with JSON-object
    arguments count; anything else stays prose, so a malformed call is never passed on as a call."""
    names = {t.name for t in tools}
    if not names:
        return text, []
    calls: list[ToolCall] = []
    for raw in _BLOCK.findall(text):
        call = _as_call(raw, names)
        if call is not None:
            calls.append(call)
    if calls:
        return _BLOCK.sub("", text).strip(), calls
    stripped = text.strip().removeprefix("```json").removeprefix("```").removesuffix("```").strip()
    call = _as_call(stripped, names)
    return ("", [call]) if call is not None else (text, [])


def _as_call(raw: str, names: set[str]) -> ToolCall | None:
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError:
        return None
    if not isinstance(obj, dict) or obj.get("name") not in names:
        return None
    arguments = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            return None
    if not isinstance(arguments, dict):
        return None
    return ToolCall(name=obj["name"], arguments=arguments)
