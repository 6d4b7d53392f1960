"""Tool calls and structured output on the packaged models, constrained by grammar: a forced call is one
valid call, "auto" lets the model choose and finishes a call it starts, `with_structured_output` and
LlamaIndex's `structured_predict` give objects that validate, token fusion keeps the grammar in the union
vocabulary, agents call their tool. Token counts and windows come from the members' own files.

The default ensemble sends requests with tools to Qwen2.5-Coder-0.5B (the turn after the tools answered to
1.5B), and `response_format` ones to 1.5B, all under the grammar; the run of 0.5B alone through a fallback
(a forced call and a free choice) is marked slow:
`scripts/test --runslow tests/integration/test_agents_structured.py`."""

from __future__ import annotations

import pytest
from jsonschema import validate
from langchain_core.tools import tool
from llama_index.core.agent.workflow import FunctionAgent, ToolCallResult
from llama_index.core.prompts import PromptTemplate
from llama_index.core.tools import FunctionTool
from pydantic import BaseModel

from ensemble_core import Ensemble
from ensemble_core.strategies import TokenFusion
from langchain_ensemble import EnsembleChatModel
from llamaindex_ensemble import EnsembleLLM

pytestmark = pytest.mark.integration


@tool
def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


ARGUMENTS = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}}


class Person(BaseModel):
    name: str
    age: int


def test_a_forced_call_on_the_default_ensemble_is_one_call_that_validates():
    message = (
        EnsembleChatModel(max_tokens=48)
        .bind_tools([multiply], tool_choice="multiply")
        .invoke("What is 6 times 7?")
    )
    [call] = message.tool_calls
    assert call["name"] == "multiply" and not message.invalid_tool_calls
    validate(call["args"], {**ARGUMENTS, "required": ["a", "b"]})


@pytest.mark.slow
def test_qwen_fills_a_forced_call_and_chooses_the_tool_on_its_own(qwen05):
    chat = EnsembleChatModel(members=[qwen05], strategy="fallback", max_tokens=48)
    forced = chat.bind_tools([multiply], tool_choice="any").invoke("What is 6 times 7?")
    assert forced.tool_calls[0]["args"] == {"a": 6, "b": 7}
    chosen = chat.bind_tools([multiply]).invoke("What is 6 times 7?")
    assert [c["name"] for c in chosen.tool_calls] == ["multiply"]


def test_structured_output_on_the_default_ensemble_gives_a_valid_person():
    structured = EnsembleChatModel(max_tokens=48).with_structured_output(Person, include_raw=True)
    out = structured.invoke("Extract the person: Alice Martin is 31 years old.")
    assert out["parsing_error"] is None and isinstance(out["parsed"], Person) and out["parsed"].age == 31


def test_token_fusion_of_two_tokenizers_makes_a_valid_forced_call(small_pair):
    chat = EnsembleChatModel(ensemble=Ensemble(small_pair, TokenFusion()), max_tokens=48)
    message = chat.bind_tools([multiply], tool_choice="multiply").invoke("What is 6 times 7?")
    [call] = message.tool_calls
    validate(call["args"], {**ARGUMENTS, "required": ["a", "b"]})
    assert message.response_metadata["ensemble_trace"]["details"]["constrained"] is True


def test_llamaindex_structured_predict_and_counts_before_any_weights_load():
    llm = EnsembleLLM(max_tokens=48)
    assert llm.metadata.context_window == 32768  # Qwen2.5-Coder's, read from its GGUF metadata
    person = llm.structured_predict(Person, PromptTemplate("Extract the person: {text}"), text="Bob is 45.")
    assert isinstance(person, Person) and person.age == 45
    chat = EnsembleChatModel()
    assert chat.get_num_tokens("The capital of France is Paris.") >= 7


def test_a_langchain_agent_on_the_default_ensemble_calls_the_tool_and_answers():
    from langchain.agents import create_agent

    agent = create_agent(EnsembleChatModel(max_tokens=48), [multiply])
    messages = agent.invoke({"messages": [{"role": "user", "content": "What is 17 times 23?"}]})["messages"]
    assert any(c["name"] == "multiply" for m in messages for c in getattr(m, "tool_calls", []))
    assert any(m.type == "tool" and m.content == "391" for m in messages)
    assert messages[-1].type == "ai" and "391" in messages[-1].text and not messages[-1].tool_calls


async def test_a_llamaindex_function_agent_on_the_default_ensemble_calls_the_tool_and_answers():
    def times(a: int, b: int) -> int:
        """Multiply two integers."""
        return a * b

    llm = EnsembleLLM(max_tokens=48)
    agent = FunctionAgent(tools=[FunctionTool.from_defaults(times)], llm=llm)
    handler = agent.run(user_msg="What is 6 times 7?", max_iterations=4)
    results = [e async for e in handler.stream_events() if isinstance(e, ToolCallResult)]
    answer = await handler
    assert [r.tool_name for r in results][:1] == ["times"] and str(results[0].tool_output) == "42"
    assert "42" in str(answer)
