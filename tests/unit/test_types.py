from __future__ import annotations

import pytest
from pydantic import ValidationError

from ensemble_core.errors import EmptyMessagesError
from ensemble_core.types import (
    Message,
    Params,
    Request,
    ResponseFormat,
    ToolCall,
    Usage,
    merge_tool_call_chunks,
    to_messages,
    tool_calls_to_chunks,
)


def test_question_string_becomes_one_user_message():
    assert to_messages("hi") == [Message(role="user", content="hi")]


@pytest.mark.parametrize("prompt", ["", "   ", []])
def test_empty_prompt_is_a_clear_error(prompt):
    with pytest.raises(EmptyMessagesError, match="empty"):
        to_messages(prompt)


def test_request_without_messages_names_the_problem():
    with pytest.raises(ValidationError, match="no messages"):
        Request(messages=[])


def test_dict_messages_are_validated():
    messages = to_messages([{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}])
    assert [m.role for m in messages] == ["system", "user"]
    with pytest.raises(ValidationError):
        to_messages([{"role": "wizard", "content": "hi"}])


def test_tool_message_needs_its_call_id():
    with pytest.raises(ValidationError, match="tool_call_id"):
        Message(role="tool", content="42")


def test_only_assistant_messages_carry_tool_calls():
    with pytest.raises(ValidationError, match="only assistant"):
        Message(role="user", tool_calls=[ToolCall(name="f")])


@pytest.mark.parametrize(
    "bad",
    [{"max_tokens": 0}, {"temperature": -1}, {"top_p": 0}, {"stop": [""]}, {"max_tokens": 5, "colour": 1}],
)
def test_invalid_params_are_rejected(bad):
    with pytest.raises(ValidationError):
        Params(**bad)


def test_usage_adds_up():
    total = Usage(input_tokens=3, output_tokens=4) + Usage(input_tokens=10, output_tokens=1)
    assert (total.input_tokens, total.output_tokens, total.total_tokens) == (13, 5, 18)


def test_tool_call_chunks_round_trip():
    calls = [ToolCall(name="add", arguments={"a": 1, "b": [2, 3]}), ToolCall(name="now")]
    chunks = tool_calls_to_chunks(calls)
    halves = []
    for c in chunks:  # split every argument string in two fragments, as a server would stream them
        cut = len(c.arguments) // 2
        halves += [
            c.model_copy(update={"arguments": c.arguments[:cut]}),
            c.model_copy(update={"arguments": c.arguments[cut:], "id": None, "name": None}),
        ]
    assert merge_tool_call_chunks(halves) == calls


@pytest.mark.parametrize("seed", [2**63, -(2**63) - 1, 1208925819614629174706176])
def test_a_seed_outside_64_bits_is_refused_where_it_is_given(seed):
    with pytest.raises(ValidationError, match="seed"):
        Params(seed=seed)
    assert Params(seed=2**63 - 1).seed == 2**63 - 1 and Params(seed=-(2**63)).seed == -(2**63)


def test_a_response_format_takes_a_schema_exactly_when_its_type_is_json_schema():
    schema = {"type": "object"}
    assert ResponseFormat(type="json_schema", name="x", json_schema=schema).json_schema == schema
    for bad in ({"type": "json_schema"}, {"type": "json_object", "json_schema": schema}):
        with pytest.raises(ValidationError, match="schema"):
            ResponseFormat(**bad)
