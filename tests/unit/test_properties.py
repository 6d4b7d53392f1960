"""Property-based tests (hypothesis) over the types that cross boundaries: messages, params, configs,
streams."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from ensemble_core.config import load_config
from ensemble_core.errors import ConfigError, EmptyMessagesError
from ensemble_core.members.text_stream import TextAssembler
from ensemble_core.types import (
    Message,
    Params,
    Request,
    ToolCall,
    merge_tool_call_chunks,
    to_messages,
    tool_calls_to_chunks,
)

text = st.text(max_size=40)
json_scalar = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | text
)
json_value = st.recursive(
    json_scalar,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=8,
)
tool_call = st.builds(
    ToolCall,
    name=st.from_regex(r"[a-z_]{1,12}", fullmatch=True),
    arguments=st.dictionaries(text, json_value, max_size=4),
)
message = st.one_of(
    st.builds(Message, role=st.sampled_from(["system", "user", "assistant"]), content=text),
    st.builds(Message, role=st.just("assistant"), content=text, tool_calls=st.lists(tool_call, max_size=2)),
    st.builds(
        Message,
        role=st.just("tool"),
        content=text,
        tool_call_id=st.from_regex(r"call_[a-z0-9]{1,8}", fullmatch=True),
    ),
)


@given(st.lists(message, min_size=1, max_size=6))
def test_requests_round_trip_through_json(messages):
    request = Request(messages=messages)
    assert Request.model_validate_json(request.model_dump_json()) == request
    assert to_messages([m.model_dump() for m in messages]) == messages


@given(
    st.dictionaries(
        st.sampled_from(["max_tokens", "temperature", "top_p", "stop", "seed", "other"]),
        json_value,
        max_size=5,
    )
)
def test_params_either_validate_within_bounds_or_raise_validation_error(data):
    try:
        params = Params(**data)
    except ValidationError:
        return
    assert params.max_tokens >= 1 and 0 <= params.temperature <= 10 and 0 < params.top_p <= 1
    assert all(params.stop)


@settings(max_examples=150)
@given(st.dictionaries(st.sampled_from(["members", "strategy", "extra"]), json_value, max_size=3))
def test_any_config_is_accepted_or_refused_with_a_config_error(data):
    try:
        load_config(data)
    except ConfigError as err:
        assert str(err)


@given(st.lists(st.just(" ") | text, max_size=3))
def test_blank_prompts_are_empty_message_errors(parts):
    prompt = "".join(p for p in parts if not p.strip())
    try:
        to_messages(prompt)
        raise AssertionError("accepted a blank prompt")
    except EmptyMessagesError:
        pass


@given(st.text(max_size=60), st.lists(st.text(min_size=1, max_size=4), max_size=3), st.data())
def test_streamed_text_is_the_full_text_cut_at_the_first_stop(full, stops, data):
    cuts = sorted(data.draw(st.sets(st.integers(1, max(len(full), 1)), max_size=10)))
    pieces = [full[a:b] for a, b in zip([0, *cuts], [*cuts, len(full)], strict=True) if b > a]
    assembler = TextAssembler(lambda ids: "".join(pieces[i] for i in ids), stops)
    streamed = "".join(assembler.add(i) for i in range(len(pieces))) + assembler.finish()
    positions = [p for p in (full.find(s) for s in stops) if p >= 0]
    expected = full[: min(positions)] if positions else full
    assert streamed == assembler.text == expected
    assert assembler.stopped == bool(positions)


@given(st.lists(tool_call, max_size=3), st.data())
def test_tool_calls_survive_any_fragmentation(calls, data):
    fragments = []
    for chunk in tool_calls_to_chunks(calls):
        cut = data.draw(st.integers(0, len(chunk.arguments)))
        fragments += [
            chunk.model_copy(update={"arguments": chunk.arguments[:cut]}),
            chunk.model_copy(update={"arguments": chunk.arguments[cut:], "id": None, "name": None}),
        ]
    assert merge_tool_call_chunks(fragments) == calls
