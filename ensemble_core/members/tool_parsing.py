"""Tool calls read from a local model's text: Hermes / Qwen2.5 `<tool_call>{...}</tool_call>` blocks, fenced
```json blocks, or an answer that is nothing but a JSON object with `name` and `arguments`; a forced call that
is not there is reported as an invalid call, never passed on as prose. `ProseStream` streams the prose of an
answer while holding back what may be a call."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from ensemble_core.types import InvalidToolCall, Message, Request, ToolCall, ToolSpec

CALL_OPEN = "<tool_call>"
_BLOCK = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)
_FENCE = re.compile(r"```(?:json)?\s*(\{.*?\})\s*```", re.DOTALL)
_NAME = re.compile(r'"name"\s*:\s*"([^"]*)"')


def parse_tool_calls(text: str, tools: Sequence[ToolSpec]) -> tuple[str, list[ToolCall]]:
    """Split `text` into (remaining prose, tool calls). Only calls to offered tools with JSON-object
    arguments count; anything else stays prose, so a malformed call is never passed on as a call."""
    names = {t.name for t in tools}
    if not names:
        return text, []
    for pattern in (_BLOCK, _FENCE):
        calls = [call for raw in pattern.findall(text) if (call := _as_call(raw, names)) is not None]
        if calls:
            return pattern.sub("", text).strip(), calls
    stripped = text.strip().removeprefix("```json").removeprefix("```").removesuffix("```").strip()
    call = _as_call(stripped, names)
    return ("", [call]) if call is not None else (text, [])


def parse_answer(
    text: str, request: Request, cut: bool = False
) -> tuple[str, list[ToolCall], list[InvalidToolCall]]:
    """(prose, calls, invalid calls) of an answer to `request`. When the request forces a call and the answer
    holds none, the answer is that call, invalid: `cut` says it ended at the token budget. With `tool_choice`
    "none" the answer is prose, whatever it looks like."""
    if request.tool_choice == "none":
        return text, [], []
    prose, calls = parse_tool_calls(text, request.tools)
    forced = bool(request.tools) and request.tool_choice not in (None, "auto", "none")
    if calls or not forced:
        return prose, calls, []
    why = (
        "the answer ended at max_tokens before the forced tool call was complete: raise max_tokens"
        if cut
        else "the forced tool call is not a JSON object with an offered tool's name and object arguments"
    )
    raw = text.strip()
    name = _NAME.search(raw)
    body = raw.removeprefix(CALL_OPEN).removesuffix("</tool_call>").strip()
    return "", [], [InvalidToolCall(name=name.group(1) if name else None, arguments=body, error=why)]


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


class ProseStream:
    """The prose of an answer that may hold tool calls, streamed as it is written: text is shown up to the
    point where a call may begin (a `<tool_call>` tag, a code fence, or an answer that opens like bare JSON)
    and held from there; trailing whitespace is held too, since the parsed prose is stripped. `finish` gives
    the rest of the parsed prose, so the shown deltas add up to the answer's text."""

    def __init__(self) -> None:
        self.written = ""
        self.shown = ""

    def add(self, text: str) -> str:
        """More of the answer; the prose that is now safe to show (possibly "")."""
        self.written += text
        safe = self._safe_prefix(self.written)
        if len(safe) <= len(self.shown):
            return ""
        delta, self.shown = safe[len(self.shown) :], safe
        return delta

    def finish(self, prose: str) -> str:
        """The rest of the answer's parsed prose after what was shown ("" when it does not continue it)."""
        return prose[len(self.shown) :] if prose.startswith(self.shown) else ""

    @staticmethod
    def _safe_prefix(text: str) -> str:
        if text.lstrip().startswith(("{", "`")) or not text.strip():
            return ""
        starts = [i for i in (text.find(CALL_OPEN), text.find("`")) if i >= 0]
        cut = min(starts) if starts else len(text) - _partial_tag(text)
        return text[:cut].rstrip()


def _partial_tag(text: str) -> int:
    """Length of the longest end of `text` that begins a `<tool_call>` tag."""
    longest = min(len(CALL_OPEN) - 1, len(text))
    return next((n for n in range(longest, 0, -1) if text.endswith(CALL_OPEN[:n])), 0)


def repeats_answered_calls(request: Request, calls: Sequence[ToolCall]) -> bool:
    """Whether an answer to a request that leaves the choice to the model (`tool_choice` "auto") only makes
    calls the conversation already holds results for (same tool, same arguments): the loop a small model
    falls into after a tool answers. Such a member is asked again with `tool_choice` "none", to answer from
    the results (`answer_from_results`)."""
    if not calls or request.tool_choice not in (None, "auto"):
        return False
    answered_ids = {m.tool_call_id for m in request.messages if m.role == "tool"}
    answered = {
        _call_key(c)
        for m in request.messages
        if m.role == "assistant"
        for c in m.tool_calls
        if c.id in answered_ids
    }
    return all(_call_key(c) in answered for c in calls)


def _call_key(call: ToolCall) -> tuple[str, str]:
    return call.name, json.dumps(call.arguments, sort_keys=True)


def answer_from_results(request: Request) -> Request:
    """The request again, to be answered in text from the tool results it holds: no tool may be called
    (`tool_choice` "none", so the tools are not shown either), and the tool exchange after the newest user
    turn is restated in that turn ("add(a=45, b=97) returned 142."). Shown their own tool turns without the
    tools, Qwen2.5-Coder models apologise or write another call; restated, they answer (docs/RESULTS.md)."""
    messages = request.messages
    asked = max((i for i, m in enumerate(messages) if m.role == "user"), default=None)
    since = messages[asked + 1 :] if asked is not None else []
    calls = {c.id: c for m in since if m.role == "assistant" for c in m.tool_calls}
    results = [
        f"{_described(calls.get(m.tool_call_id or ''), m)} returned {m.content.strip()}."
        for m in since
        if m.role == "tool"
    ]
    if asked is None or not results:
        return request.model_copy(update={"tool_choice": "none"})
    question = messages[asked]
    restated = question.model_copy(
        update={
            "content": f"{question.content}\n\nTool results: {' '.join(results)}\n"
            "Answer the question from these results."
        }
    )
    return request.model_copy(update={"tool_choice": "none", "messages": [*messages[:asked], restated]})


def _described(call: ToolCall | None, result: Message) -> str:
    if call is None:
        return result.name or "a tool"
    return f"{call.name}({', '.join(f'{k}={v}' for k, v in call.arguments.items())})"
