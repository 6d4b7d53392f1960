"""Forced tool calls (`tool_choice` "any" or a tool's name) for local HF members: the answer is made to begin
with the opening of a tool call, so even a small model answers with a call to the tool it was told to use."""

from __future__ import annotations

from ensemble_core.members.tool_parsing import forced_call, forced_prefix, parse_tool_calls
from ensemble_core.types import Message, Request, ToolSpec
from langchain_ensemble import EnsembleChatModel

TOOLS = [
    ToolSpec(
        name="magic_function", parameters={"type": "object", "properties": {"input": {"type": "integer"}}}
    )
]


def request(tool_choice: str | None, tools: list[ToolSpec] = TOOLS) -> Request:
    return Request(
        messages=[Message(role="user", content="magic_function(3)?")], tools=tools, tool_choice=tool_choice
    )


def test_a_forced_call_begins_the_answer_and_ends_at_the_closing_tag():
    forced = forced_call(request("magic_function"))
    assert forced.prefill == '<tool_call>{"name": "magic_function", "arguments": {'
    assert forced.params.stop == ["</tool_call>"]
    text, calls = parse_tool_calls(forced.prefill + '"input": 3}}', TOOLS)
    assert text == "" and calls[0].name == "magic_function" and calls[0].arguments == {"input": 3}


def test_only_required_or_named_choices_force_a_call():
    assert forced_call(request(None)) == request(None)
    assert forced_call(request("auto")) == request("auto")
    two = [*TOOLS, ToolSpec(name="get_weather")]
    assert forced_prefix(request("required", two)) == '<tool_call>{"name": "'
    assert forced_prefix(request("required")).startswith('<tool_call>{"name": "magic_function"')


def test_the_hf_member_writes_after_the_forced_opening(tiny_member):
    forced = forced_call(request("required"))
    assert tiny_member.format_prompt(forced).endswith(forced.prefill)
    chat = EnsembleChatModel(members=[tiny_member], max_tokens=3)
    message = chat.bind_tools([TOOLS[0].as_openai()], tool_choice="any").invoke("magic_function(3)?")
    # A random tiny model cannot finish the call, so its unparsed answer shows the forced opening.
    assert message.tool_calls or message.content.startswith('<tool_call>{"name": "magic_function"')
