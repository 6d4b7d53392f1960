"""A scripted tool-calling member for the standard suites: it answers from the request the way a capable
model would (a tool call with arguments filled from the question, or text), so the ensemble's tool-calling
mechanism is proven where a 135M model cannot write reliable tool arguments."""

from __future__ import annotations

import json
import re
from typing import Any

from ensemble_core.members.scripted import ScriptedMember
from ensemble_core.types import Request, ToolCall, ToolSpec


def tool_calling_member(name: str = "tool-caller") -> ScriptedMember:
    return ScriptedMember(name, answer)


def answer(request: Request) -> str | ToolCall:
    """JSON filled from the last question when a response format asks for it; text when there are no tools,
    tools are declined, or a tool has just answered; otherwise a call to the chosen tool (or the first), its
    arguments filled from the last question."""
    last = request.messages[-1]
    if request.response_format is not None and request.response_format.type != "text":
        schema = request.response_format.json_schema or {"type": "object", "properties": {}}
        return json.dumps(fill_arguments(ToolSpec(name="answer", parameters=schema), last.content))
    if not request.tools or request.tool_choice == "none" or last.role == "tool":
        return f"Hello! You said: {last.content[:40]}" if last.content else "Hello!"
    names = [t.name for t in request.tools]
    spec = (
        request.tools[names.index(request.tool_choice)] if request.tool_choice in names else request.tools[0]
    )
    return ToolCall(name=spec.name, arguments=fill_arguments(spec, last.content))


def fill_arguments(spec: ToolSpec, question: str) -> dict[str, Any]:
    """Integers from the numbers in the question, in order; strings from its quoted text, or the question."""
    numbers = iter(int(n) for n in re.findall(r"-?\d+", question))
    quoted = re.findall(r"'([^']+)'", question)
    arguments: dict[str, Any] = {}
    for field, schema in spec.parameters.get("properties", {}).items():
        kind = schema.get("type") or next(
            (s.get("type") for s in schema.get("anyOf", []) if s.get("type")), None
        )
        if kind == "integer":
            arguments[field] = next(numbers, 0)
        elif kind == "number":
            arguments[field] = float(next(numbers, 0))
        else:
            arguments[field] = quoted[0] if quoted else question
    return arguments
