"""SpanFusion: members propose spans, all score them, the least surprising one is kept and continued."""

from __future__ import annotations

import pytest

from ensemble_core import Ensemble
from ensemble_core.errors import AllMembersFailedError, CapabilityError, ConfigError
from ensemble_core.members.scripted import ScriptedMember
from ensemble_core.scoring.continuations import continuation_pair
from ensemble_core.strategies import SpanFusion
from ensemble_core.strategies.span_fusion import cut_words
from ensemble_core.types import Request, ToolCall, ToolSpec, merge_tool_call_chunks
from tests.unit.fusion_doubles import continuing, prefers, scoring

PARIS = "The capital of France is Paris."
LONDON = "The capital of France is London."


# cutting spans at word boundaries --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "words", "finished", "expected"),
    [
        (" is the capital of", 2, False, (" is the", False)),  # ends before the whitespace of the next word
        (" is Paris.", 3, True, (" is Paris.", True)),  # the member ended within the span
        (" is Paris.\n", 3, True, (" is Paris.", True)),
        (" is Par", 3, False, (" is", False)),  # a cut-off word is not taken
        (" Pneumonoultramicroscopic", 2, False, (" Pneumonoultramicroscopic", False)),  # one long word: kept
        ("", 2, True, ("", True)),
    ],
)
def test_cut_words(text, words, finished, expected):
    assert cut_words(text, words, finished) == expected


# the fused answer -------------------------------------------------------------------------------------------
def test_agreeing_members_need_no_scoring():
    a = scoring("a", continuing(PARIS))
    b = scoring("b", continuing(PARIS))
    result = Ensemble([a, b], SpanFusion(words=2)).run("What is the capital of France?")
    assert result.text == PARIS
    assert result.finish_reason == "stop"
    rounds = result.trace.details["rounds"]
    assert [r["text"] for r in rounds] == ["The capital", " of France", " is Paris."]
    assert all(r["agreed"] for r in rounds)
    assert not a.scored and not b.scored
    assert [r.prefill for r in a.calls] == ["", "The capital", "The capital of France"]


def test_least_surprising_span_wins_and_all_continue_from_it():
    a = scoring("a", continuing(LONDON), scorer=prefers("Paris"))
    b = scoring("b", continuing(PARIS), scorer=prefers("Paris"))
    result = Ensemble([a, b], SpanFusion(words=3)).run("What is the capital of France?")
    assert result.text == PARIS
    last = result.trace.details["rounds"][-1]
    assert last["candidates"] == [" France is London.", " France is Paris."]
    assert last["winner"] == "b"
    assert last["combined"][1] < last["combined"][0]
    assert set(last["perplexity"]) == {"a", "b"}
    assert {c.role for c in result.trace.calls} == {"propose span", "score span"}
    # every member scored every candidate, each with its own prompt and the text so far as the prefill
    assert [(p.endswith("assistant: The capital of"), c) for p, c in a.scored] == [
        (True, " France is London."),
        (True, " France is Paris."),
    ]


def test_weights_decide_between_members_that_disagree():
    a = scoring("a", continuing(LONDON), scorer=prefers("London", bad=-5.0))
    b = scoring("b", continuing(PARIS), scorer=prefers("Paris", bad=-1.0))
    equal = Ensemble([a, b], SpanFusion(words=8)).run("Capital?")
    assert equal.text == LONDON  # a's dislike of Paris outweighs b's dislike of London
    weighted = Ensemble([a, b], SpanFusion(words=8, weights={"b": 1.0})).run("Capital?")
    assert weighted.text == PARIS


def test_weights_are_checked():
    a = scoring("a", continuing(PARIS))
    with pytest.raises(ConfigError, match="no member is named 'c'"):
        Ensemble([a], SpanFusion(weights={"c": 1.0}))
    with pytest.raises(ConfigError, match="at least one above 0"):
        Ensemble([a], "span-fusion", weights={"a": 0.0})


def test_members_need_the_score_capability():
    with pytest.raises(CapabilityError, match="'plain'.*'score'"):
        Ensemble([scoring("a", ["x"]), ScriptedMember("plain", ["x"])], SpanFusion())


def test_max_tokens_and_stop_strings_end_the_answer():
    a = scoring("a", continuing(PARIS))
    short = Ensemble([a], SpanFusion(words=2)).run("Capital?", max_tokens=3)
    assert short.finish_reason == "length"
    assert short.text == "The capital of France"
    stopped = Ensemble([a], SpanFusion(words=2)).run("Capital?", stop=["France"])
    assert stopped.finish_reason == "stop"
    assert stopped.text == "The capital of "


def test_a_failing_member_is_dropped_for_the_round():
    a = scoring("a", continuing(PARIS))
    broken = scoring("broken", [RuntimeError("backend down")])
    result = Ensemble([a, broken], SpanFusion(words=8)).run("Capital?")
    assert result.text == PARIS
    assert result.trace.details["rounds"][0]["failed"] == ["broken"]
    failed = [c for c in result.trace.calls if not c.ok]
    assert failed and "backend down" in failed[0].error


def test_every_member_failing_is_a_clear_error():
    members = [scoring(n, [RuntimeError(f"{n} is down")]) for n in ("a", "b")]
    with pytest.raises(AllMembersFailedError, match="a is down.*b is down"):
        Ensemble(members, SpanFusion()).run("Capital?")


def test_every_scorer_failing_is_a_clear_error():
    def broken(prompt: str, continuation: str) -> float:
        raise RuntimeError("no logprobs")

    members = [
        scoring("a", continuing(PARIS), scorer=broken),
        scoring("b", continuing(LONDON), scorer=broken),
    ]
    with pytest.raises(AllMembersFailedError, match="no logprobs"):
        Ensemble(members, SpanFusion(words=8)).run("Capital?")


def test_a_member_that_ignores_the_prefill_and_starts_over_still_continues():
    restarts = scoring("restarts", lambda request: PARIS)  # like a chat API without assistant prefill
    result = Ensemble([restarts], SpanFusion(words=2)).run("Capital?")
    assert result.text == PARIS
    assert [r["text"] for r in result.trace.details["rounds"]] == ["The capital", " of France", " is Paris."]


def test_a_member_that_ends_yields_to_one_that_goes_on():
    short = scoring("short", continuing("Paris.", otherwise=""))
    long = scoring("long", continuing("Paris. It is on the Seine.", otherwise=""))
    result = Ensemble([long, short], SpanFusion(words=3)).run("Capital?")
    assert result.text == "Paris. It is on the Seine."
    assert result.trace.details["rounds"][1]["proposals"]["short"] == ""


async def test_stream_yields_each_accepted_span_and_joins_to_the_result():
    a = scoring("a", continuing(LONDON), scorer=prefers("Paris"))
    b = scoring("b", continuing(PARIS), scorer=prefers("Paris"))
    ens = Ensemble([a, b], SpanFusion(words=2))
    result = await ens.arun("Capital?")
    deltas = [d async for d in ens.astream("Capital?")]
    assert [d.text for d in deltas[:-1]] == [r["text"] for r in result.trace.details["rounds"]]
    assert "".join(d.text for d in deltas) == result.text == PARIS
    assert deltas[-1].trace.details["rounds"] == result.trace.details["rounds"]
    assert deltas[-1].usage == result.usage


def test_a_proposed_tool_call_is_returned_intact():
    call = ToolCall(name="weather", arguments={"city": "Paris"})
    talker = scoring("talker", continuing("Let me think about the weather."))
    caller = scoring("caller", [call])
    tools = [
        ToolSpec(name="weather", parameters={"type": "object", "properties": {"city": {"type": "string"}}})
    ]
    ens = Ensemble([talker, caller], SpanFusion())
    result = ens.run("Weather in Paris?", tools=tools)
    assert result.tool_calls == [call]
    assert result.finish_reason == "tool_calls"
    assert talker.calls[0].params.max_tokens == 256  # the first round asks for whole answers
    deltas = list(ens.stream("Weather in Paris?", tools=tools))
    assert merge_tool_call_chunks([c for d in deltas for c in d.tool_call_chunks]) == [call]
    assert deltas[-1].finish_reason == "tool_calls" and deltas[-1].trace.chosen == "caller"


def test_text_answers_go_on_when_tools_are_given_but_not_called():
    a = scoring("a", continuing(PARIS))
    tools = [ToolSpec(name="weather")]
    result = Ensemble([a], SpanFusion(words=2)).run("Capital?", tools=tools)
    assert result.text == PARIS and not result.tool_calls


# the prefill hook on real (tiny) models --------------------------------------------------------------------
def test_hf_member_continues_its_own_prompt_after_a_prefill(tiny_member):
    request = Request(messages=[{"role": "user", "content": "hi"}])
    assert (
        tiny_member.format_prompt(request.with_prefill("Hello"))
        == tiny_member.format_prompt(request) + "Hello"
    )
    plain = tiny_member.generate(request.with_params(max_tokens=2))
    prefilled = tiny_member.generate(request.with_prefill("Hello").with_params(max_tokens=2))
    assert prefilled.usage.input_tokens == plain.usage.input_tokens + len("Hello")  # byte tokenizer


def test_continuation_pair_follows_the_member_format(tiny_member):
    request = Request(messages=[{"role": "user", "content": "hi"}])
    prompt, continuation = continuation_pair(tiny_member, request, "The", " cat")
    assert prompt.endswith("assistant\nThe") and continuation == " cat"


def test_span_fusion_runs_on_tiny_models(tiny_member, tiny_model_dir):
    from ensemble_core.members.hf import HFMember

    other = HFMember(tiny_model_dir, name="tiny2", prompt_format="plain")
    result = Ensemble([tiny_member, other], SpanFusion(words=2, span_tokens=6)).run("Hi", max_tokens=12)
    rounds = result.trace.details["rounds"]
    assert rounds and result.text == "".join(r["text"] for r in rounds if "text" in r).lstrip()
    assert {r["winner"] for r in rounds if "winner" in r} <= {"tiny", "tiny2"}
