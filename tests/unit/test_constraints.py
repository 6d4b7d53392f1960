"""Grammar-constrained decoding with tiny random models and the byte-level tokenizer (one token per byte, so
each mask is easy to read): forced and optional tool calls, JSON schemas, rows of one batch with different
constraints or none, and token fusion's constraint in the union vocabulary of two tokenizers."""

from __future__ import annotations

import json

import pytest
from jsonschema import validate
from langchain_core.messages import HumanMessage

from ensemble_core import Ensemble
from ensemble_core.asyncio_bridge import run_sync
from ensemble_core.fused_decoding import member_alignment
from ensemble_core.members.hf import HFMember
from ensemble_core.members.hf.constraints import closed, constraint_for, request_grammar
from ensemble_core.members.hf.formats import tools_system_text
from ensemble_core.members.tool_parsing import (
    ProseStream,
    answer_from_results,
    parse_answer,
    repeats_answered_calls,
)
from ensemble_core.mixing import UnionConstraint
from ensemble_core.strategies import Contrastive, TokenFusion
from ensemble_core.types import Message, Request, ResponseFormat, ToolCall, ToolSpec
from langchain_ensemble import EnsembleChatModel
from llamaindex_ensemble import EnsembleLLM
from tests.unit.conftest import MERGES
from tests.unit.tiny_models import byte_tokenizer, tiny_llama

WEATHER = ToolSpec(
    name="get_weather",
    description="The weather in a city.",
    parameters={
        "type": "object",
        "properties": {"city": {"enum": ["Paris", "Rome"]}},
        "required": ["city"],
    },
)
UNITS = ToolSpec(
    name="units", parameters={"type": "object", "properties": {"metric": {"type": "boolean"}}, "required": []}
)
CHOICE = {"type": "object", "properties": {"answer": {"enum": ["yes", "no"]}}, "required": ["answer"]}


@pytest.fixture(scope="module")
def roomy(tmp_path_factory):
    """A tiny model with room for a prompt that describes tools (2048 positions)."""
    return HFMember(tiny_llama(tmp_path_factory.mktemp("roomy"), max_positions=2048), name="roomy")


@pytest.fixture(scope="module")
def roomy_merged(tmp_path_factory):
    """The same, with the tokenizer that has merged tokens the byte tokenizer lacks."""
    folder = tiny_llama(
        tmp_path_factory.mktemp("roomy-merged"),
        seed=2,
        tokenizer=byte_tokenizer(merges=MERGES),
        max_positions=2048,
    )
    return HFMember(folder, name="roomy_merged")


def asking(tool_choice: str | None = None, tools=(WEATHER,), response_format=None, max_tokens=96) -> Request:
    return Request(
        messages=[Message(role="user", content="weather?")],
        tools=list(tools),
        tool_choice=tool_choice,
        response_format=response_format,
        params={"max_tokens": max_tokens},
    )


def allowed_text(member: HFMember, constraint) -> set[str]:
    mask = constraint.allowed()
    return {member.tokenizer.convert_ids_to_tokens(i) for i in mask.nonzero().flatten().tolist()}


# grammars and masks
# ----------------------------------------------------------------------------------------------------------
def test_a_forced_call_allows_only_the_next_byte_of_the_call_and_end_only_when_it_is_whole(roomy):
    lm = roomy.loaded()
    constraint = constraint_for(lm.tokenizer, lm.vocab_width, lm.eos_ids(), asking("get_weather"))
    assert allowed_text(roomy, constraint) == {"<"}
    text = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "'
    assert constraint.advance(lm.encode_continuation(text))
    assert allowed_text(roomy, constraint) == {"P", "R"}  # Paris or Rome, nothing else
    assert constraint.advance(lm.encode_continuation('Rome"}}\n</tool_call>'))
    assert constraint.complete and allowed_text(roomy, constraint) == {"<|im_end|>"}


def test_auto_allows_prose_or_a_call_that_once_begun_must_finish(roomy):
    lm = roomy.loaded()
    prose = constraint_for(lm.tokenizer, lm.vocab_width, lm.eos_ids(), asking("auto"))
    assert prose.advance(lm.encode_continuation("It is sunny"))
    assert prose.complete and len(allowed_text(roomy, prose)) > 150  # any byte that can begin a character
    call = constraint_for(lm.tokenizer, lm.vocab_width, lm.eos_ids(), asking("auto"))
    assert call.advance(lm.encode_continuation("<tool_call>\n"))
    assert allowed_text(roomy, call) == {"{"} and not call.complete
    bare = constraint_for(lm.tokenizer, lm.vocab_width, lm.eos_ids(), asking("auto"))
    assert bare.advance(lm.encode_continuation('{"name": "'))  # an untagged call is a call: a valid one
    assert allowed_text(roomy, bare) == {"g"}


def test_no_grammar_without_a_form_to_keep_and_only_prose_when_calls_are_declined(roomy):
    assert request_grammar(asking(None, tools=())) is None
    assert request_grammar(asking(None, tools=(), response_format=ResponseFormat(type="text"))) is None
    lm = roomy.loaded()
    declined = constraint_for(lm.tokenizer, lm.vocab_width, lm.eos_ids(), asking("none"))
    opening = allowed_text(roomy, declined)
    assert "{" not in opening and "`" not in opening and "<" in opening  # no bare or fenced JSON, no tag
    assert declined.advance(lm.encode_continuation("<tool")) and not declined.fits(
        lm.encode_continuation("_call>")
    )


def test_a_call_the_conversation_already_answered_is_not_made_again():
    call = ToolCall(id="call_1", name="get_weather", arguments={"city": "Rome"})
    thread = [
        Message(role="user", content="weather?"),
        Message(role="assistant", tool_calls=[call]),
        Message(role="tool", content="sunny", tool_call_id="call_1"),
    ]
    request = Request(messages=thread, tools=[WEATHER], tool_choice="auto")
    assert repeats_answered_calls(request, [ToolCall(name="get_weather", arguments={"city": "Rome"})])
    assert not repeats_answered_calls(request, [ToolCall(name="get_weather", arguments={"city": "Paris"})])
    forced = request.model_copy(update={"tool_choice": "get_weather"})
    assert not repeats_answered_calls(forced, [ToolCall(name="get_weather", arguments={"city": "Rome"})])


def test_answering_from_results_restates_the_tool_exchange_in_the_question_and_calls_nothing():
    earlier = [Message(role="user", content="hi"), Message(role="assistant", content="hello")]
    calls = [
        ToolCall(id="c1", name="get_weather", arguments={"city": "Rome"}),
        ToolCall(id="c2", name="get_weather", arguments={"city": "Oslo"}),
    ]
    thread = [
        *earlier,
        Message(role="user", content="Where is it warmer?"),
        Message(role="assistant", tool_calls=calls),
        Message(role="tool", content="24 C", tool_call_id="c1"),
        Message(role="tool", content=" 3 C ", tool_call_id="c2"),
    ]
    again = answer_from_results(Request(messages=thread, tools=[WEATHER], tool_choice="auto"))
    assert again.tool_choice == "none"
    assert again.messages[:2] == earlier and len(again.messages) == 3
    assert again.messages[2].role == "user"
    assert again.messages[2].content == (
        "Where is it warmer?\n\nTool results: get_weather(city=Rome) returned 24 C. "
        "get_weather(city=Oslo) returned 3 C.\nAnswer the question from these results."
    )
    no_results = Request(messages=thread[:3], tools=[WEATHER])
    assert answer_from_results(no_results).messages == no_results.messages


def test_objects_are_closed_unless_they_say_otherwise():
    schema = {"type": "object", "properties": {"a": {"type": "object", "properties": {"b": {}}}}}
    assert closed(schema)["additionalProperties"] is False
    assert closed(schema)["properties"]["a"]["additionalProperties"] is False
    assert closed({"type": "object", "additionalProperties": True}) == {
        "type": "object",
        "additionalProperties": True,
    }


def test_the_tools_prompt_shows_a_real_call_not_a_placeholder():
    text = tools_system_text([WEATHER, UNITS])
    assert "<arguments as JSON>" not in text
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>' in text


# generation
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("choice", ["get_weather", "required"])
def test_a_random_model_forced_to_call_makes_one_valid_call(roomy, choice):
    generation = roomy.generate(asking(choice))
    assert generation.finish_reason == "tool_calls" and generation.text == ""
    [call] = generation.tool_calls
    assert call.name == "get_weather"
    validate(call.arguments, WEATHER.parameters)


def test_a_random_model_answers_json_that_validates(roomy):
    fmt = ResponseFormat(type="json_schema", json_schema=CHOICE)
    generation = roomy.generate(asking(tools=(), response_format=fmt, max_tokens=40))
    validate(json.loads(generation.text), CHOICE)


def test_rows_of_one_batch_keep_their_own_constraints(roomy):
    fmt = ResponseFormat(type="json_schema", json_schema=CHOICE)
    requests = [
        asking("get_weather"),
        asking(tools=(), response_format=fmt, max_tokens=40),
        asking(tools=(), max_tokens=12),
    ]
    runs = [roomy._run(r) for r in requests]
    roomy._batcher._generate(runs)  # one batched generate for all three rows
    call, answer, free = (run.generation(0.0) for run in runs)
    assert call.tool_calls[0].arguments["city"] in ("Paris", "Rome")
    validate(json.loads(answer.text), CHOICE)
    assert free.usage.output_tokens == 12 and not free.tool_calls  # no grammar: the random model rambles


def test_a_forced_call_cut_by_the_budget_is_an_invalid_call_never_prose(roomy):
    generation = roomy.generate(asking("get_weather", max_tokens=10))
    assert generation.text == "" and not generation.tool_calls
    [invalid] = generation.invalid_tool_calls
    assert "max_tokens" in invalid.error
    message = EnsembleChatModel(members=[roomy], max_tokens=10).invoke(
        "weather?", tools=[WEATHER.as_openai()], tool_choice="get_weather"
    )
    assert message.content == "" and not message.tool_calls
    assert "max_tokens" in message.invalid_tool_calls[0]["error"]


def test_a_streamed_forced_call_arrives_as_one_tool_call_chunk(roomy):
    chat = EnsembleChatModel(members=[roomy], max_tokens=96).bind_tools(
        [WEATHER.as_openai()], tool_choice="get_weather"
    )
    chunks = list(chat.stream("weather?"))
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged += chunk
    assert merged.content == "" and merged.tool_calls[0]["name"] == "get_weather"


def test_prose_streams_token_by_token_when_tools_are_bound(roomy):
    chat = EnsembleChatModel(members=[roomy], max_tokens=12).bind_tools([WEATHER.as_openai()])
    chunks = [c for c in chat.stream("weather?") if c.content]
    assert len(chunks) > 1  # text as it comes, not one block at the end
    assert "".join(c.content for c in chunks) == chat.invoke("weather?").content


# token fusion: the union vocabulary
# ----------------------------------------------------------------------------------------------------------
def test_union_tokens_a_member_lacks_are_checked_by_its_own_spelling(roomy, roomy_merged):
    alignment = member_alignment([roomy, roomy_merged])
    request = asking("get_weather")
    constraint = UnionConstraint(
        alignment, {0: roomy.constraint(request), 1: roomy_merged.constraint(request)}
    )
    mask = constraint.mask([0, 1])
    assert mask is not None
    assert {alignment.union_bytes[u] for u in mask.nonzero().flatten().tolist()} == {b"<"}
    he = alignment.union_bytes.index(b"he")  # the byte tokenizer lacks it: spelled "h", "e", not allowed
    assert alignment.from_union[0][he] == -1 and not constraint.fits([0, 1], he)


FUSED = {
    "prob": lambda: TokenFusion(),
    "logit": lambda: TokenFusion(mixing="logit"),  # log-space scores: a masked token must sink under all
    "contrastive": lambda: Contrastive(beta=1.0),
}


@pytest.mark.parametrize("method", sorted(FUSED))
@pytest.mark.parametrize("pair", ["shared", "cross"])
def test_fused_decoding_honours_a_forced_call_in_the_union_vocabulary(
    roomy, roomy_merged, tmp_path, pair, method
):
    other = (
        HFMember(tiny_llama(tmp_path / "b", seed=1, max_positions=2048), name="roomy_b")
        if pair == "shared"
        else roomy_merged
    )
    ensemble = Ensemble([roomy, other], FUSED[method]())
    result = ensemble.run("weather?", tools=[WEATHER], tool_choice="required")
    assert result.finish_reason == "tool_calls" and result.trace.details["constrained"] is True
    assert result.tool_calls[0].arguments["city"] in ("Paris", "Rome")
    fmt = ResponseFormat(type="json_schema", json_schema=CHOICE)
    request = ensemble.request("ok?", max_tokens=40).model_copy(update={"response_format": fmt})
    validate(json.loads(run_sync(ensemble.arun_request(request)).text), CHOICE)


# parsing and streaming prose
# ----------------------------------------------------------------------------------------------------------
def test_fenced_and_bare_json_calls_parse_and_a_missing_forced_call_is_invalid():
    fenced = 'Here it is:\n```json\n{"name": "get_weather", "arguments": {"city": "Rome"}}\n```'
    text, calls, invalid = parse_answer(fenced, asking("auto"))
    assert text == "Here it is:" and calls[0].arguments == {"city": "Rome"} and not invalid
    _, calls, _ = parse_answer('{"name": "get_weather", "arguments": {"city": "Paris"}}', asking("auto"))
    assert calls[0].name == "get_weather"
    text, calls, invalid = parse_answer("I will not.", asking("get_weather"))
    assert text == "" and not calls and invalid[0].arguments == "I will not."


def test_prose_streams_until_a_call_may_begin_and_adds_up_to_the_parsed_text():
    stream = ProseStream()
    shown = [stream.add(p) for p in ["Let me ", "check.\n", "<tool", '_call>\n{"name": "x"}</tool_call>']]
    assert shown == ["Let me", " check.", "", ""]
    assert stream.finish("Let me check.") == ""
    whole = ProseStream()
    assert whole.add('{"name": "get_weather"') == ""  # an answer that opens like JSON is held whole


# token counts and windows without weights
# ----------------------------------------------------------------------------------------------------------
def test_token_counts_and_the_window_come_before_any_weights_load(tmp_path):
    member = HFMember(tiny_llama(tmp_path / "m", max_positions=512), name="cold")
    assert member.context_window == 512 and len(member.token_ids("hello")) == 5
    chat = EnsembleChatModel(members=[member])
    assert chat.get_num_tokens("hello") == 5  # one token per byte
    request = Request(messages=[Message(role="user", content="hello")])
    assert chat.get_num_tokens_from_messages([HumanMessage("hello")]) == member.prompt_tokens(request)
    assert chat.profile["max_input_tokens"] == 512
    assert EnsembleLLM(members=[member]).metadata.context_window == 512
    assert member._lm is None  # nothing above loaded the weights


# the service
# ----------------------------------------------------------------------------------------------------------
def test_the_service_honours_response_format_and_tool_choice_on_a_local_member(roomy):
    import httpx

    from tests.serving import serving

    schema = {"name": "choice", "schema": CHOICE}
    body = {
        "messages": [{"role": "user", "content": "ok?"}],
        "max_tokens": 40,
        "response_format": {"type": "json_schema", "json_schema": schema},
    }
    forced = {
        "messages": [{"role": "user", "content": "weather?"}],
        "max_tokens": 96,
        "tools": [WEATHER.as_openai()],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    }
    with serving(Ensemble([roomy], "fallback")) as url:
        answer = httpx.post(f"{url}/chat/completions", json=body, timeout=120).json()
        called = httpx.post(f"{url}/chat/completions", json=forced, timeout=120).json()
    validate(json.loads(answer["choices"][0]["message"]["content"]), CHOICE)
    [call] = called["choices"][0]["message"]["tool_calls"]
    assert call["function"]["name"] == "get_weather" and called["choices"][0]["finish_reason"] == "tool_calls"
    validate(json.loads(call["function"]["arguments"]), WEATHER.parameters)
