from __future__ import annotations

from ensemble_core.members.tool_parsing import parse_tool_calls
from ensemble_core.types import ToolSpec

TOOLS = [
    ToolSpec(name="get_weather", parameters={"type": "object", "properties": {"city": {"type": "string"}}})
]


def test_hermes_block_is_a_tool_call():
    text, calls = parse_tool_calls(
        '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>', TOOLS
    )
    assert text == "" and calls[0].name == "get_weather" and calls[0].arguments == {"city": "Paris"}


def test_bare_json_answer_is_a_tool_call():
    _, calls = parse_tool_calls(
        '```json\n{"name": "get_weather", "arguments": "{\\"city\\": \\"Rome\\"}"}\n```', TOOLS
    )
    assert calls[0].arguments == {"city": "Rome"}


def test_unknown_tool_or_bad_json_stays_prose():
    for text in [
        '<tool_call>{"name": "launch", "arguments": {}}</tool_call>',
        "<tool_call>{not json</tool_call>",
        "Paris.",
    ]:
        assert parse_tool_calls(text, TOOLS) == (text, [])


def test_without_tools_nothing_is_parsed():
    text = '{"name": "get_weather", "arguments": {}}'
    assert parse_tool_calls(text, []) == (text, [])
