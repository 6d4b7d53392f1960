"""Tool calls parsed from a local model's text output: Hermes `<tool_call>{...}</tool_call>` blocks, or an
answer that is nothing but a JSON object with `name` and `arguments`."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from ensemble_core.types import Request, ToolCall, ToolSpec

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


def forced_call(request: Request) -> Request:
    """Honour `tool_choice` "required" or a tool's name for a local model: the answer is made to begin with
    the opening of a Hermes tool call (with the tool's name when it is given, or when there is only one
    tool), and to stop at its end. `forced_prefix` is what the parser must put back in front of the output."""
    prefix = forced_prefix(request)
    if not prefix:
        return request
    return request.with_prefill(prefix).with_params(stop=[*request.params.stop, "</tool_call>"])


def forced_prefix(request: Request) -> str:
    """The text a forced tool call begins with ("" when the request does not force one or already has a
    prefill)."""
    choice = request.tool_choice
    if not request.tools or request.prefill or choice in (None, "auto", "none"):
        return ""
    names = [t.name for t in request.tools]
    name = choice if choice in names else names[0] if len(names) == 1 else None
    if name is None:
        return '<tool_call>{"name": "'
    return f'<tool_call>{{"name": "{name}", "arguments": {{'
