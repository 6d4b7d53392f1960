"""Contract tests for `EnsembleLLM`, in the pattern of llama-index's own integration packages: the class is a
`FunctionCallingLLM`, every public method of `LLM` works sync and async, streamed deltas add up to the final
text, callbacks and instrumentation events fire, and usage reaches LlamaIndex's token counter. Scripted
members make every case deterministic."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from llama_index.core.base.llms.base import BaseLLM
from llama_index.core.base.llms.types import ChatMessage, ImageBlock, MessageRole, TextBlock, ToolCallBlock
from llama_index.core.callbacks import CallbackManager, CBEventType, LlamaDebugHandler, TokenCountingHandler
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.llm import LLMChatEndEvent, LLMChatStartEvent
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.prompts import PromptTemplate
from llama_index.core.tools import FunctionTool
from pydantic import BaseModel, Field

from ensemble_core import CapabilityError, ConfigError, Ensemble, Member, Request, ToolCall, Trace
from ensemble_core.defaults import DEFAULT_ENSEMBLE_STRATEGY, default_members
from ensemble_core.members.scripted import ScriptedMember
from ensemble_core.types import Generation
from llamaindex_ensemble import EnsembleLLM

ANSWER = "Paris is the capital of France"


def user(text: str) -> list[ChatMessage]:
    return [ChatMessage(role=MessageRole.USER, content=text)]


def scripted_llm(script=(ANSWER,), **fields) -> tuple[EnsembleLLM, ScriptedMember]:
    member = ScriptedMember("scripted", list(script) if not callable(script) else script)
    return EnsembleLLM(ensemble=Ensemble([member], "single", member="scripted"), **fields), member


def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


def tool_script(request: Request):
    """Calls `multiply` when offered tools and no tool result is there yet; then answers with the result."""
    last = request.messages[-1]
    if last.role == "tool":
        return f"The product is {last.content}."
    if request.tools:
        return ToolCall(id="call_1", name="multiply", arguments={"a": 6, "b": 7})
    return "no tools offered"


# the class and its metadata ---------------------------------------------------------------------------------
def test_is_a_function_calling_llm():
    names = [b.__name__ for b in EnsembleLLM.__mro__]
    assert BaseLLM.__name__ in names and FunctionCallingLLM.__name__ in names
    assert EnsembleLLM.class_name() == "EnsembleLLM"


def test_metadata_reports_the_smallest_context_window_and_the_answer_budget():
    members = [
        ScriptedMember("a", ["x"], context_window=4096),
        ScriptedMember("b", ["y"], context_window=2048),
    ]
    llm = EnsembleLLM(ensemble=Ensemble(members, "fallback"), max_tokens=77)
    meta = llm.metadata
    assert meta.context_window == 2048
    assert meta.num_output == 77
    assert meta.is_chat_model and meta.is_function_calling_model
    assert meta.model_name == "ensemble:fallback(a,b)"


def test_metadata_counts_only_the_members_the_strategy_uses():
    members = [
        ScriptedMember("a", ["x"], context_window=4096),
        ScriptedMember("b", ["y"], context_window=512),
    ]
    llm = EnsembleLLM(ensemble=Ensemble(members, "single", member="a"))
    assert llm.metadata.context_window == 4096
    assert llm.metadata.model_name == "ensemble:single(a)"


def test_function_calling_is_reported_only_where_every_used_member_can_call_tools():
    class NoTools(ScriptedMember):
        supports_tools = False

    members = [ScriptedMember("a", ["x"]), NoTools("b", ["y"])]
    assert not EnsembleLLM(ensemble=Ensemble(members, "fallback")).metadata.is_function_calling_model
    assert EnsembleLLM(ensemble=Ensemble(members, "single", member="a")).metadata.is_function_calling_model


# construction ----------------------------------------------------------------------------------------------
def test_built_from_members_and_a_strategy_name():
    llm = EnsembleLLM(
        members=[ScriptedMember("a", ["one"]), ScriptedMember("b", ["two"])],
        strategy="single",
        strategy_params={"member": "b"},
    )
    assert llm.complete("q").text == "two"
    assert list(llm.ensemble.members) == ["a", "b"]


def test_built_from_a_config_file(tmp_path):
    path = tmp_path / "ensemble.yaml"
    path.write_text(
        "members:\n  - {type: packaged, model: smollm2}\nstrategy:\n  name: single\n"
        "  params: {member: smollm2}\n"
    )
    llm = EnsembleLLM.from_config(path, max_tokens=12)
    assert llm.metadata.model_name == "ensemble:single(smollm2)"
    assert llm.max_tokens == 12


def test_no_arguments_is_the_embedded_default_ensemble():
    llm = EnsembleLLM()
    assert llm.ensemble.strategy.name == DEFAULT_ENSEMBLE_STRATEGY
    assert list(llm.ensemble.members) == [m.name for m in default_members()]


def test_construction_errors_say_what_to_pass():
    ens = Ensemble([ScriptedMember("a", ["x"])])
    with pytest.raises(ConfigError, match="either ensemble"):
        EnsembleLLM(ensemble=ens, members=[ScriptedMember("b", ["y"])])


# every public method, sync and async ------------------------------------------------------------------------
def test_chat_and_complete():
    llm, _ = scripted_llm()
    response = llm.chat(user("capital of France?"))
    assert response.message.role == MessageRole.ASSISTANT and response.message.content == ANSWER
    assert llm.complete("capital of France?").text == ANSWER


async def test_achat_and_acomplete():
    llm, _ = scripted_llm()
    assert (await llm.achat(user("q"))).message.content == ANSWER
    assert (await llm.acomplete("q")).text == ANSWER


def test_predict_and_stream_fill_the_prompt_template():
    llm, member = scripted_llm()
    prompt = PromptTemplate("What is the capital of {country}?")
    assert llm.predict(prompt, country="France") == ANSWER
    assert "".join(llm.stream(prompt, country="Italy")) == ANSWER
    assert member.calls[-1].messages[-1].content == "What is the capital of Italy?"


async def test_apredict_and_astream():
    llm, _ = scripted_llm()
    prompt = PromptTemplate("What is the capital of {country}?")
    assert await llm.apredict(prompt, country="France") == ANSWER
    assert "".join([t async for t in await llm.astream(prompt, country="France")]) == ANSWER


def test_stream_chat_deltas_add_up_to_the_final_message():
    llm, _ = scripted_llm()
    responses = list(llm.stream_chat(user("q")))
    assert len(responses) > 2
    assert "".join(r.delta for r in responses) == responses[-1].message.content == ANSWER
    assert all(
        r.message.content == "".join(x.delta for x in responses[: i + 1]) for i, r in enumerate(responses)
    )


def test_stream_complete_deltas_add_up_to_the_final_text():
    llm, _ = scripted_llm()
    responses = list(llm.stream_complete("q"))
    assert "".join(r.delta for r in responses) == responses[-1].text == ANSWER


async def test_astream_chat_and_astream_complete_deltas_add_up():
    llm, _ = scripted_llm()
    chats = [r async for r in await llm.astream_chat(user("q"))]
    assert "".join(r.delta for r in chats) == chats[-1].message.content == ANSWER
    completions = [r async for r in await llm.astream_complete("q")]
    assert "".join(r.delta for r in completions) == completions[-1].text == ANSWER


def test_call_params_override_the_fields_and_reach_the_members():
    llm, member = scripted_llm(max_tokens=40, temperature=0.3, stop=["\n\n"])
    llm.chat(user("q"))
    assert member.calls[-1].params.max_tokens == 40 and member.calls[-1].params.stop == ["\n\n"]
    llm.chat(user("q"), max_tokens=8, seed=3)
    params = member.calls[-1].params
    assert (params.max_tokens, params.seed, params.temperature) == (8, 3, 0.3)


def test_unknown_call_options_are_rejected_with_the_ones_there_are():
    llm, _ = scripted_llm()
    with pytest.raises(ConfigError, match="does not take 'frequency_penalty'.*max_tokens"):
        llm.chat(user("q"), frequency_penalty=1.0)
    with pytest.raises(ConfigError, match="frequency_penalty"):
        llm.stream_chat(user("q"), frequency_penalty=1.0)


class Rendezvous(Member):
    """Answers only once `expected` calls are inside members of the same group at the same time: a test
    that uses it finishes only if those calls overlap on the event loop (no timing involved)."""

    def __init__(self, name: str, group: dict[str, Any], answer: str | None = None) -> None:
        super().__init__(name)
        self.group = group
        self.answer = answer

    def generate(self, request: Request) -> Generation:
        raise AssertionError("the async path must not fall back to the sync one")

    async def agenerate(self, request: Request) -> Generation:
        self.group["inside"] += 1
        if self.group["inside"] == self.group["expected"]:
            self.group["all_in"].set()
        await asyncio.wait_for(self.group["all_in"].wait(), timeout=10)
        return Generation(member=self.name, text=self.answer or request.messages[-1].content)


def rendezvous_group(expected: int) -> dict[str, Any]:
    return {"inside": 0, "expected": expected, "all_in": asyncio.Event()}


async def test_async_calls_run_on_the_event_loop_concurrently():
    llm = EnsembleLLM(ensemble=Ensemble([Rendezvous("r", rendezvous_group(2))]))
    first, second = await asyncio.gather(llm.achat(user("one")), llm.achat(user("two")))
    assert (first.message.content, second.message.content) == ("one", "two")


async def test_members_of_one_call_are_asked_concurrently():
    """Vote asks every member; each waits for all three to be inside, so this passes only if they overlap."""
    group = rendezvous_group(3)
    members = [
        Rendezvous("a", group, "Paris"),
        Rendezvous("b", group, "Lyon"),
        Rendezvous("c", group, "Paris"),
    ]
    llm = EnsembleLLM(members=members, strategy="vote")
    response = await llm.achat(user("capital of France?"))
    assert response.message.content == "Paris"
    assert sorted(c.member for c in response.raw["trace"].calls) == ["a", "b", "c"]


# usage, trace, callbacks, instrumentation -------------------------------------------------------------------
def test_raw_holds_usage_finish_reason_and_trace():
    llm, _ = scripted_llm()
    raw = llm.chat(user("one two three")).raw
    assert raw["usage"] == {"prompt_tokens": 3, "completion_tokens": 6, "total_tokens": 9}
    assert raw["finish_reason"] == "stop"
    assert isinstance(raw["trace"], Trace) and raw["trace"].chosen == "scripted"
    last = list(llm.stream_chat(user("one two three")))[-1]
    assert last.raw["usage"]["completion_tokens"] == 6 and last.raw["trace"].strategy == "single"


def test_token_counter_reads_the_ensemble_usage():
    counter = TokenCountingHandler()
    llm, _ = scripted_llm(callback_manager=CallbackManager([counter]))
    llm.chat(user("one two three"))
    list(llm.stream_chat(user("four five")))
    llm.complete("six")
    assert [e.prompt_token_count for e in counter.llm_token_counts] == [3, 2, 1]
    assert [e.completion_token_count for e in counter.llm_token_counts] == [6, 6, 6]


async def test_callback_events_fire_for_every_method():
    debug = LlamaDebugHandler()
    llm, _ = scripted_llm(callback_manager=CallbackManager([debug]))
    llm.chat(user("q"))
    await llm.achat(user("q"))
    list(llm.stream_chat(user("q")))
    [r async for r in await llm.astream_chat(user("q"))]
    llm.complete("q")
    await llm.acomplete("q")
    list(llm.stream_complete("q"))
    [r async for r in await llm.astream_complete("q")]
    pairs = debug.get_event_pairs(CBEventType.LLM)
    assert len(pairs) == 8
    ends = [end.payload for _, end in pairs]
    assert all(ANSWER in str(p.get("response", p.get("completion"))) for p in ends)


def test_instrumentation_events_fire():
    class Collect(BaseEventHandler):
        events: list[BaseEvent] = Field(default_factory=list)

        def handle(self, event: BaseEvent, **kwargs) -> None:
            self.events.append(event)

    handler = Collect()
    dispatcher = get_dispatcher()
    dispatcher.add_event_handler(handler)
    try:
        llm, _ = scripted_llm()
        llm.chat(user("q"))
    finally:
        dispatcher.event_handlers.remove(handler)
    kinds = [type(e) for e in handler.events]
    assert LLMChatStartEvent in kinds and LLMChatEndEvent in kinds
    end = next(e for e in handler.events if isinstance(e, LLMChatEndEvent))
    assert end.response.message.content == ANSWER


def test_member_failures_surface_as_errors_and_in_callbacks():
    debug = LlamaDebugHandler()
    llm, _ = scripted_llm([RuntimeError("boom")], callback_manager=CallbackManager([debug]))
    with pytest.raises(Exception, match="boom"):
        llm.chat(user("q"))
    _, end = debug.get_event_pairs(CBEventType.LLM)[0]
    assert "exception" in end.payload


# messages ---------------------------------------------------------------------------------------------------
def test_roles_tool_messages_and_tool_call_blocks_reach_the_members():
    llm, member = scripted_llm(["ok"])
    history = [
        ChatMessage(role=MessageRole.SYSTEM, content="be brief"),
        ChatMessage(role=MessageRole.USER, content="6 times 7?"),
        ChatMessage(
            role=MessageRole.ASSISTANT,
            blocks=[
                TextBlock(text=""),
                ToolCallBlock(tool_call_id="c1", tool_name="multiply", tool_kwargs='{"a": 6, "b": 7}'),
            ],
        ),
        ChatMessage(role=MessageRole.TOOL, content="42", additional_kwargs={"tool_call_id": "c1"}),
        ChatMessage(role=MessageRole.DEVELOPER, content="answer in words"),
    ]
    llm.chat(history)
    sent = member.calls[-1].messages
    assert [m.role for m in sent] == ["system", "user", "assistant", "tool", "system"]
    assert sent[2].tool_calls == [ToolCall(id="c1", name="multiply", arguments={"a": 6, "b": 7})]
    assert (sent[3].tool_call_id, sent[3].content) == ("c1", "42")


def test_images_and_tool_results_without_ids_are_clear_errors():
    llm, _ = scripted_llm()
    image = ChatMessage(
        role=MessageRole.USER, blocks=[TextBlock(text="what is this?"), ImageBlock(url="http://x/y.png")]
    )
    with pytest.raises(CapabilityError, match="message 0.*ImageBlock.*text only"):
        llm.chat([image])
    with pytest.raises(ConfigError, match="tool_call_id"):
        llm.chat([*user("q"), ChatMessage(role=MessageRole.TOOL, content="42")])


# tools ------------------------------------------------------------------------------------------------------
TOOL = FunctionTool.from_defaults(multiply)


def test_chat_with_tools_returns_tool_call_blocks_and_selections():
    llm, member = scripted_llm(tool_script)
    response = llm.chat_with_tools([TOOL], user_msg="What is 6 times 7?")
    blocks = [b for b in response.message.blocks if isinstance(b, ToolCallBlock)]
    assert blocks == [
        ToolCallBlock(tool_call_id="call_1", tool_name="multiply", tool_kwargs={"a": 6, "b": 7})
    ]
    (selection,) = llm.get_tool_calls_from_response(response)
    assert (selection.tool_id, selection.tool_name, selection.tool_kwargs) == (
        "call_1",
        "multiply",
        {"a": 6, "b": 7},
    )
    (spec,) = member.calls[-1].tools
    assert spec.name == "multiply" and spec.parameters["required"] == ["a", "b"]
    assert response.raw["finish_reason"] == "tool_calls"


async def test_achat_and_stream_chat_with_tools():
    llm, _ = scripted_llm(tool_script)
    response = await llm.achat_with_tools([TOOL], user_msg="6 times 7?")
    assert llm.get_tool_calls_from_response(response)[0].tool_kwargs == {"a": 6, "b": 7}
    last = list(llm.stream_chat_with_tools([TOOL], user_msg="6 times 7?"))[-1]
    assert llm.get_tool_calls_from_response(last)[0].tool_name == "multiply"
    last = [r async for r in await llm.astream_chat_with_tools([TOOL], user_msg="6 times 7?")][-1]
    assert llm.get_tool_calls_from_response(last)[0].tool_name == "multiply"


def test_tool_required_and_tool_choice_reach_the_request():
    llm, member = scripted_llm(tool_script)
    llm.chat_with_tools([TOOL], user_msg="q", tool_required=True)
    assert member.calls[-1].tool_choice == "required"
    llm.chat_with_tools(
        [TOOL], user_msg="q", tool_choice={"type": "function", "function": {"name": "multiply"}}
    )
    assert member.calls[-1].tool_choice == "multiply"


def test_only_the_first_tool_call_is_kept_without_parallel_calls():
    two = [
        ToolCall(id="c1", name="multiply", arguments={"a": 1, "b": 2}),
        ToolCall(id="c2", name="multiply", arguments={"a": 3, "b": 4}),
    ]
    llm, _ = scripted_llm([two])
    assert len(llm.get_tool_calls_from_response(llm.chat_with_tools([TOOL], user_msg="q"))) == 1
    parallel = llm.chat_with_tools([TOOL], user_msg="q", allow_parallel_tool_calls=True)
    assert [s.tool_id for s in llm.get_tool_calls_from_response(parallel)] == ["c1", "c2"]


def test_a_tool_name_the_engine_cannot_take_is_a_clear_error():
    llm, _ = scripted_llm(tool_script)
    bad = FunctionTool.from_defaults(multiply, name="multiply numbers")
    with pytest.raises(ConfigError, match="tool 'multiply numbers' cannot be offered.*name="):
        llm.chat_with_tools([bad], user_msg="q")


def test_no_tool_call_is_an_error_only_when_asked():
    llm, _ = scripted_llm()
    response = llm.chat(user("q"))
    assert llm.get_tool_calls_from_response(response, error_on_no_tool_call=False) == []
    with pytest.raises(ValueError, match="without a tool call"):
        llm.get_tool_calls_from_response(response)


def test_predict_and_call_runs_the_tool():
    llm, _ = scripted_llm(tool_script)
    assert llm.predict_and_call([TOOL], user_msg="What is 6 times 7?").response == "42"


async def test_apredict_and_call_runs_the_tool():
    llm, _ = scripted_llm(tool_script)
    assert (await llm.apredict_and_call([TOOL], user_msg="What is 6 times 7?")).response == "42"


class City(BaseModel):
    name: str
    country: str


def city_script(request: Request) -> ToolCall:
    """Fills the output class, offered as a tool named after it (LlamaIndex's function-calling program)."""
    (spec,) = request.tools
    assert spec.name == "City"
    return ToolCall(name="City", arguments={"name": "Paris", "country": "France"})


def test_structured_predict_goes_through_a_tool_call():
    llm, _ = scripted_llm(city_script)
    city = llm.structured_predict(City, PromptTemplate("Name the capital of {country}."), country="France")
    assert city == City(name="Paris", country="France")


async def test_astructured_predict_goes_through_a_tool_call():
    llm, _ = scripted_llm(city_script)
    city = await llm.astructured_predict(
        City, PromptTemplate("Name the capital of {country}."), country="France"
    )
    assert city == City(name="Paris", country="France")


def test_streamed_tool_call_arguments_appear_once_complete():
    """A member that streams a tool call's JSON arguments in pieces: interim responses keep the calls that
    are complete, and the last response has the whole call."""
    from ensemble_core.types import Delta, ToolCallChunk

    class Piecewise(ScriptedMember):
        async def astream(self, request):
            arguments = json.dumps({"a": 6, "b": 7})
            yield Delta(
                tool_call_chunks=[ToolCallChunk(index=0, id="c1", name="multiply", arguments=arguments[:5])]
            )
            yield Delta(tool_call_chunks=[ToolCallChunk(index=0, arguments=arguments[5:])])
            yield Delta(final=True, finish_reason="tool_calls")

    llm = EnsembleLLM(ensemble=Ensemble([Piecewise("p", ["unused"])]))
    responses = list(llm.stream_chat_with_tools([TOOL], user_msg="q"))
    assert llm.get_tool_calls_from_response(responses[0], error_on_no_tool_call=False) == []
    assert llm.get_tool_calls_from_response(responses[-1])[0].tool_kwargs == {"a": 6, "b": 7}
