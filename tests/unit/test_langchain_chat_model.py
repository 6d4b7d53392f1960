"""EnsembleChatModel with scripted members: construction, invoke, usage, metadata, tools, structured output,
stop sequences, model override, timeouts."""

from __future__ import annotations

import json
import threading
from typing import ClassVar

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.tools import tool
from pydantic import BaseModel, Field

from ensemble_core import Ensemble
from ensemble_core.defaults import DEFAULT_ENSEMBLE_STRATEGY, default_members
from ensemble_core.errors import ConfigError
from ensemble_core.members.scripted import ScriptedMember
from ensemble_core.run_context import RunContext
from ensemble_core.strategies.base import Strategy
from ensemble_core.types import Request, Result, ToolCall
from langchain_ensemble import EnsembleChatModel


class AskAll(Strategy):
    """A test strategy that asks every member and keeps the last answer (to check usage summing)."""

    name: ClassVar[str] = "ask-all"
    summary: ClassVar[str] = "every member answers; the last one is kept"

    async def arun(self, ctx: RunContext, request: Request) -> Result:
        generations = [await ctx.generate(m, request, role="answer") for m in ctx.members.values()]
        return ctx.result(generations[-1], reason="the last member")


@tool
def magic_function(input: int) -> int:
    """Apply a magic function to an input."""
    return input + 2


class Joke(BaseModel):
    """Joke to tell user."""

    setup: str = Field(description="question to set up a joke")
    punchline: str = Field(description="answer to resolve the joke")


def tool_caller(name: str = "tools") -> ScriptedMember:
    """Calls the forced tool (or the first one) with arguments it can fill from the schema; asked for JSON, it
    answers a Joke as JSON."""

    def script(request: Request) -> ToolCall | str:
        if request.response_format is not None:
            return json.dumps({"setup": "Why?", "punchline": "Because."})
        if not request.tools:
            return "no tools here"
        names = [t.name for t in request.tools]
        chosen = request.tool_choice if request.tool_choice in names else names[0]
        arguments = {"setup": "Why?", "punchline": "Because."} if chosen == "Joke" else {"input": 3}
        return ToolCall(id="call_fixed", name=chosen, arguments=arguments)

    return ScriptedMember(name, script)


# construction
# ------------------------------------------------------------------------------------------------
def test_built_from_an_ensemble_members_or_a_config(tmp_path):
    ens = Ensemble([ScriptedMember("a", ["hi"])], "single", member="a")
    assert EnsembleChatModel(ensemble=ens).ensemble is ens
    chat = EnsembleChatModel(
        members=[ScriptedMember("a", ["hi"])], strategy="single", strategy_params={"member": "a"}
    )
    assert chat.ensemble.strategy.name == "single"
    from ensemble_core.strategies import Single

    instance = EnsembleChatModel(members=[ScriptedMember("a", ["hi"])], strategy=Single(member="a"))
    assert instance.invoke("hello").response_metadata["model_name"] == "single[a]"
    config = tmp_path / "ensemble.yaml"
    config.write_text("members:\n  - {type: packaged, model: smollm2}\nstrategy: {name: fallback}\n")
    from_file = EnsembleChatModel.from_config(config, max_tokens=8)
    assert list(from_file.ensemble.members) == ["smollm2"] and from_file.max_tokens == 8


def test_no_arguments_is_the_embedded_default_ensemble():
    chat = EnsembleChatModel()
    assert chat.ensemble.strategy.name == DEFAULT_ENSEMBLE_STRATEGY
    assert list(chat.ensemble.members) == [m.name for m in default_members()]


def test_construction_errors_say_what_to_pass():
    ens = Ensemble([ScriptedMember("a", ["hi"])])
    with pytest.raises(ValueError, match="either ensemble=.* an Ensemble has its own members and strategy"):
        EnsembleChatModel(ensemble=ens, members=[ScriptedMember("b", ["x"])])
    with pytest.raises(ValueError, match="an Ensemble has its own members and strategy"):
        EnsembleChatModel(ensemble=ens, strategy="single")
    with pytest.raises(ValueError, match="unknown strategy"):
        EnsembleChatModel(members=[ScriptedMember("a", ["hi"])], strategy="no-such")


# invoke
# ------------------------------------------------------------------------------------------------------
def test_invoke_returns_the_answer_with_trace_and_model_name():
    chat = EnsembleChatModel(
        members=[ScriptedMember("down", [RuntimeError("boom")]), ScriptedMember("up", ["Paris."])]
    )
    message = chat.invoke("Capital of France?")
    assert message.content == "Paris."
    assert message.response_metadata["model_name"] == "fallback[down,up]"
    trace = message.response_metadata["ensemble_trace"]
    assert json.loads(json.dumps(trace)) == trace
    assert trace["chosen"] == "up"
    assert [(c["member"], c["ok"]) for c in trace["calls"]] == [("down", False), ("up", True)]


def test_usage_is_summed_over_every_member_call():
    a, b = ScriptedMember("a", ["one two three"]), ScriptedMember("b", ["four five"])
    chat = EnsembleChatModel(ensemble=Ensemble([a, b], AskAll()))
    message = chat.invoke("count for me")
    assert message.content == "four five"
    # each scripted call reads 3 prompt words; outputs are 3 and 2 words
    assert message.usage_metadata == {"input_tokens": 6, "output_tokens": 5, "total_tokens": 11}


async def test_ainvoke_runs_members_on_the_callers_event_loop():
    seen: list[int] = []

    def script(request: Request) -> str:
        seen.append(threading.get_ident())
        return "native"

    chat = EnsembleChatModel(members=[ScriptedMember("a", script)])
    message = await chat.ainvoke("hi")
    assert message.content == "native"
    assert seen == [threading.get_ident()], "ainvoke must not hop to a worker thread around a sync call"


def test_conversation_with_tool_turns_reaches_the_members_as_engine_messages():
    member = ScriptedMember("a", ["3"])
    chat = EnsembleChatModel(members=[member])
    from langchain_core.messages import SystemMessage, ToolMessage

    chat.invoke(
        [
            SystemMessage("be brief"),
            HumanMessage([{"type": "text", "text": "What is "}, {"type": "text", "text": "1 + 2?"}]),
            AIMessage(
                "", tool_calls=[{"name": "add", "args": {"a": 1, "b": 2}, "id": "abc", "type": "tool_call"}]
            ),
            ToolMessage("3", tool_call_id="abc", name="add"),
        ]
    )
    messages = member.calls[0].messages
    assert [m.role for m in messages] == ["system", "user", "assistant", "tool"]
    assert messages[1].content == "What is 1 + 2?"
    assert messages[2].tool_calls[0].id == "abc" and messages[2].tool_calls[0].arguments == {"a": 1, "b": 2}
    assert messages[3].tool_call_id == "abc"


def test_stop_and_params_reach_the_request():
    member = ScriptedMember("a", ["ok"])
    chat = EnsembleChatModel(members=[member], max_tokens=7, temperature=0.5, stop=["END"])
    chat.invoke("hi")
    chat.invoke("hi", stop=["STOP"], max_tokens=3)
    first, second = (call.params for call in member.calls)
    assert (first.max_tokens, first.temperature, first.stop) == (7, 0.5, ["END"])
    assert (second.max_tokens, second.stop) == (3, ["STOP"])


def test_unknown_call_arguments_are_refused_by_name():
    chat = EnsembleChatModel(members=[ScriptedMember("a", ["ok"])])
    with pytest.raises(ConfigError, match="frequency_penalty"):
        chat.invoke("hi", frequency_penalty=1.0)


def test_chat_openai_arguments_that_change_nothing_are_accepted():
    chat = EnsembleChatModel(members=[ScriptedMember("a", ["ok"])])
    assert chat.bind_tools([], parallel_tool_calls=False).invoke("hi", user="u-1").content == "ok"


def test_model_override_asks_that_member_alone():
    a, b = ScriptedMember("a", ["from a"]), ScriptedMember("b", ["from b"])
    chat = EnsembleChatModel(members=[a, b])
    message = chat.invoke("hi", model="b")
    assert message.content == "from b" and message.response_metadata["model_name"] == "single[b]"
    assert not a.calls
    with pytest.raises(ConfigError, match="names no member"):
        chat.invoke("hi", model="gpt-9")


def test_timeout_bounds_the_whole_call():
    chat = EnsembleChatModel(members=[ScriptedMember("slow", ["late"], delay_s=2.0)], timeout=0.2)
    with pytest.raises(TimeoutError, match="timeout=0.2"):
        chat.invoke("hi")
    with pytest.raises(TimeoutError, match="timeout=0.2"):
        list(chat.stream("hi"))


# metadata
# ----------------------------------------------------------------------------------------------------
def test_langsmith_params_identifying_params_and_type():
    chat = EnsembleChatModel(members=[ScriptedMember("a", ["ok"])], max_tokens=9, temperature=0.1, stop=["x"])
    ls = chat._get_ls_params()
    assert ls == {
        "ls_provider": "llm-ensemble",
        "ls_model_name": "fallback[a]",
        "ls_model_type": "chat",
        "ls_temperature": 0.1,
        "ls_max_tokens": 9,
        "ls_stop": ["x"],
    }
    assert chat._get_ls_params(model="a")["ls_model_name"] == "a"
    assert chat._llm_type == "llm-ensemble"
    params = chat._identifying_params
    assert params["members"] == ["a=a"] and params["max_tokens"] == 9 and "Fallback" in params["strategy"]


def test_profile_says_only_what_the_members_support():
    from langchain_core.language_models import GenericFakeChatModel

    scripted = EnsembleChatModel(members=[ScriptedMember("a", ["ok"], context_window=2048)])
    assert scripted.profile["tool_calling"] is True
    assert scripted.profile["max_input_tokens"] == 2048
    assert scripted.profile["image_inputs"] is False and scripted.profile["structured_output"] is False
    no_tools = EnsembleChatModel(
        members=[ScriptedMember("a", ["ok"]), GenericFakeChatModel(messages=iter([]))]
    )
    assert no_tools.profile["tool_calling"] is False and no_tools.profile["tool_choice"] is False


# tools
# -------------------------------------------------------------------------------------------------------
def test_bind_tools_passes_tools_choice_and_kwargs_and_returns_the_calls():
    member = tool_caller()
    chat = EnsembleChatModel(members=[member])
    message = chat.bind_tools([magic_function], tool_choice="any", max_tokens=5).invoke("magic_function(3)?")
    assert message.tool_calls == [
        {"name": "magic_function", "args": {"input": 3}, "id": "call_fixed", "type": "tool_call"}
    ]
    request = member.calls[0]
    assert request.tool_choice == "required" and request.params.max_tokens == 5
    assert request.tools[0].name == "magic_function"
    assert request.tools[0].parameters["properties"]["input"]["type"] == "integer"


def test_tool_choice_by_name_and_unknown_names():
    member = tool_caller()
    chat = EnsembleChatModel(members=[member])
    message = chat.bind_tools([Joke, magic_function], tool_choice="magic_function").invoke("hi")
    assert message.tool_calls[0]["name"] == "magic_function"
    assert member.calls[0].tool_choice == "magic_function"
    with pytest.raises(ConfigError, match="names no bound tool"):
        chat.bind_tools([magic_function], tool_choice="other")


def test_streamed_tool_calls_merge_into_whole_calls():
    chat = EnsembleChatModel(members=[tool_caller()])
    full = None
    for chunk in chat.bind_tools([magic_function]).stream("magic_function(3)?"):
        full = chunk if full is None else full + chunk
    assert full.tool_calls == [
        {"name": "magic_function", "args": {"input": 3}, "id": "call_fixed", "type": "tool_call"}
    ]


@pytest.mark.parametrize("method", ["function_calling", "json_schema", "json_mode"])
def test_with_structured_output(method):
    chat = EnsembleChatModel(members=[tool_caller()])
    structured = chat.with_structured_output(Joke, method=method)
    assert structured.invoke("a joke about cats") == Joke(setup="Why?", punchline="Because.")
    assert list(structured.stream("a joke about cats"))[-1] == Joke(setup="Why?", punchline="Because.")
    as_dict = chat.with_structured_output(Joke.model_json_schema(), method=method).invoke("joke")
    assert as_dict == {"setup": "Why?", "punchline": "Because."}


async def test_structured_output_async():
    chat = EnsembleChatModel(members=[tool_caller()])
    assert await chat.with_structured_output(Joke).ainvoke("joke") == Joke(setup="Why?", punchline="Because.")


def test_api_keys_stay_out_of_the_trace_and_the_repr():
    from ensemble_core.members.openai_compat import OpenAICompatMember

    remote = OpenAICompatMember(
        base_url="http://127.0.0.1:9/v1",
        model="gpt-x",
        api_key="sk-live-secret",
        name="remote",
        max_retries=0,
    )
    chat = EnsembleChatModel(members=[remote, ScriptedMember("local", ["fallback answer"])])
    message = chat.invoke("hi")
    assert message.content == "fallback answer"
    assert message.response_metadata["ensemble_trace"]["calls"][0]["ok"] is False
    assert "sk-live-secret" not in json.dumps(message.response_metadata)
    assert "sk-live-secret" not in repr(chat)
