"""The engine's road end to end with scripted members: construction checks, Single, Fallback, streaming,
async, failures and timeouts."""

from __future__ import annotations

import asyncio

import pytest

from ensemble_core import (
    AllMembersFailedError,
    Capability,
    CapabilityError,
    ConfigError,
    Ensemble,
    MemberError,
    ToolCall,
    UnknownStrategyError,
)
from ensemble_core.asyncio_bridge import run_sync
from ensemble_core.errors import DeadlineExceededError, UnknownModelError
from ensemble_core.members.scripted import ScriptedMember
from ensemble_core.strategies import Fallback, Single, Strategy
from ensemble_core.types import Delta


class _NeedsScore(Single):
    name = "needs-score"
    requires = frozenset({Capability.GENERATE, Capability.SCORE})


def test_unknown_strategy_lists_the_known_ones():
    with pytest.raises(UnknownStrategyError, match="unknown strategy 'nope'.*fallback.*single"):
        Ensemble([ScriptedMember("a", ["x"])], "nope")


def test_member_names_must_be_unique_and_present():
    with pytest.raises(ConfigError, match="unique.*a"):
        Ensemble([ScriptedMember("a", ["x"]), ScriptedMember("a", ["y"])])
    with pytest.raises(ConfigError, match="at least one member"):
        Ensemble([])
    with pytest.raises(ConfigError, match="no member is named 'b'"):
        Ensemble([ScriptedMember("a", ["x"])], "single", member="b")


def test_missing_capability_names_member_and_capability():
    with pytest.raises(CapabilityError, match="member 'a'.*lacks the 'score' capability.*needs-score"):
        Ensemble([ScriptedMember("a", ["x"])], _NeedsScore(member="a"))


def test_single_answers_with_usage_and_trace():
    ens = Ensemble([ScriptedMember("a", ["one two"]), ScriptedMember("b", ["three"])], Single(member="b"))
    result = ens.run("hi there")
    assert result.text == "three"
    assert result.trace.chosen == "b" and [c.member for c in result.trace.calls] == ["b"]
    assert result.usage.input_tokens == 2 and result.usage.output_tokens == 1


def test_fallback_skips_failing_members_and_says_so():
    ens = Ensemble([ScriptedMember("a", [RuntimeError("boom")]), ScriptedMember("b", ["fine"])], Fallback())
    result = ens.run("q")
    assert result.text == "fine"
    failed, answered = result.trace.calls
    assert (failed.member, failed.ok) == ("a", False) and "boom" in failed.error
    assert answered.ok and result.trace.chosen == "b" and "'a' failed" in result.trace.reason


def test_fallback_order_is_respected():
    ens = Ensemble(
        [ScriptedMember("a", ["from a"]), ScriptedMember("b", ["from b"])], "fallback", members=["b", "a"]
    )
    assert ens.run("q").text == "from b"


def test_every_member_failing_says_why_each_failed():
    ens = Ensemble(
        [ScriptedMember("a", [RuntimeError("disk full")]), ScriptedMember("b", [ValueError("bad")])]
    )
    with pytest.raises(AllMembersFailedError, match="a: RuntimeError: disk full.*b: ValueError: bad"):
        ens.run("q")


def test_a_slow_member_times_out_and_the_next_answers():
    slow = ScriptedMember("slow", ["late"], delay_s=30, timeout_s=0.2)
    ens = Ensemble([slow, ScriptedMember("fast", ["on time"])])
    result = ens.run("q")
    assert result.text == "on time"
    assert result.trace.calls[0].error == "timed out"


def test_stream_joins_to_the_run_text_and_ends_with_usage_and_trace():
    ens = Ensemble([ScriptedMember("a", ["the capital is Paris"])], "single", member="a")
    deltas = list(ens.stream("q"))
    assert "".join(d.text for d in deltas) == ens.run("q").text
    assert len([d for d in deltas if d.text]) == 4
    final = deltas[-1]
    assert final.final and final.trace.chosen == "a" and final.usage.output_tokens == 4


def test_stream_falls_back_before_the_first_token():
    ens = Ensemble([ScriptedMember("a", [RuntimeError("down")]), ScriptedMember("b", ["ok then"])])
    deltas = list(ens.stream("q"))
    assert "".join(d.text for d in deltas) == "ok then"
    assert deltas[-1].trace.calls[0].ok is False


async def test_async_run_and_stream():
    ens = Ensemble([ScriptedMember("a", ["async answer"])], "single", member="a")
    result = await ens.arun("q")
    assert result.text == "async answer"
    texts = [d.text async for d in ens.astream("q")]
    assert "".join(texts) == "async answer"


async def test_concurrent_requests_do_not_share_traces():
    ens = Ensemble(
        [ScriptedMember("a", lambda r: r.messages[-1].content.upper(), delay_s=0.05)], "single", member="a"
    )
    results = await asyncio.gather(*(ens.arun(f"q{i}") for i in range(5)))
    assert [r.text for r in results] == [f"Q{i}" for i in range(5)]
    assert all(len(r.trace.calls) == 1 for r in results)


def test_tool_calls_pass_through():
    call = ToolCall(name="get_weather", arguments={"city": "Paris"})
    ens = Ensemble([ScriptedMember("a", [call])], "single", member="a")
    result = ens.run(
        "weather?", tools=[{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
    )
    assert result.tool_calls == [call] and result.finish_reason == "tool_calls"
    final = list(ens.stream("weather?", tools=[{"name": "get_weather"}]))
    chunks = [c for d in final for c in d.tool_call_chunks]
    assert chunks and chunks[0].name == "get_weather"


def test_run_works_inside_a_running_event_loop():
    ens = Ensemble([ScriptedMember("a", ["x"])], "single", member="a")

    async def inside() -> str:
        return ens.run("q").text  # e.g. a sync call from a notebook cell

    assert asyncio.run(inside()) == "x"


def test_strategy_params_are_validated_with_the_field_name():
    with pytest.raises(ConfigError, match="strategy 'single': members: Field required"):
        Ensemble([ScriptedMember("a", ["x"])], "single")
    with pytest.raises(ConfigError, match="colour: unknown field"):
        Ensemble([ScriptedMember("a", ["x"])], "fallback", colour="red")


def test_member_error_names_the_member():
    err = MemberError("a", "timed out")
    assert "member 'a' failed: timed out" in str(err)


def test_every_registered_strategy_declares_its_metadata():
    from ensemble_core.strategies.registry import strategy_class, strategy_names

    for name in strategy_names():
        cls = strategy_class(name)
        assert issubclass(cls, Strategy) and cls.name == name and cls.summary


def test_a_request_deadline_ends_a_slow_call_with_a_named_error():
    ens = Ensemble([ScriptedMember("slow", ["late"], delay_s=2.0)], "single", member="slow")
    request = ens.request("?").model_copy(update={"timeout_s": 0.1})
    with pytest.raises(DeadlineExceededError, match=r"did not answer within timeout=0.1 s"):
        run_sync(ens.arun_request(request))

    async def stream() -> list[Delta]:
        return [d async for d in ens.astream_request(request)]

    with pytest.raises(DeadlineExceededError, match=r"did not finish its stream within timeout=0.1 s"):
        run_sync(stream())
    fast = Ensemble([ScriptedMember("fast", ["now"])], "single", member="fast")
    assert run_sync(fast.arun_request(fast.request("?").model_copy(update={"timeout_s": 5.0}))).text == "now"


def test_for_model_names_the_ensemble_or_one_member():
    ens = Ensemble([ScriptedMember("a", ["from a"]), ScriptedMember("b", ["from b"])], "fallback")
    assert ens.for_model(None) is ens and ens.for_model("ensemble") is ens
    alone = ens.for_model("b")
    assert alone.strategy.name == "single" and alone.run("?").text == "from b"
    assert alone.members["b"] is ens.members["b"]  # the same member: breaker and weights shared
    with pytest.raises(
        UnknownModelError, match=r"model='c' names no member of this ensemble; the members are: a, b"
    ):
        ens.for_model("c")
