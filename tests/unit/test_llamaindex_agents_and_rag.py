"""LlamaIndex's own machinery driven by an `EnsembleLLM`: FunctionAgent and ReActAgent call a tool (streaming
and not), and the RAG and chat-engine examples answer with their source nodes. Scripted members make the
mechanism deterministic; the packaged models run the same paths in tests/integration."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
from llama_index.core import Settings
from llama_index.core.agent.workflow import FunctionAgent, ReActAgent, ToolCallResult
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.tools import FunctionTool

from ensemble_core import Ensemble, Request, ToolCall
from ensemble_core.members.scripted import ScriptedMember
from llamaindex_ensemble import EnsembleLLM

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


def function_calling_script(request: Request):
    """Calls `multiply` when offered tools and no tool result is there yet; then answers with the result."""
    last = request.messages[-1]
    if last.role == "tool":
        return f"The product is {last.content}."
    return ToolCall(name="multiply", arguments={"a": 6, "b": 7}) if request.tools else "no tools offered"


def react_script(request: Request) -> str:
    """Writes ReAct steps: an action first, the answer once the observation is in the conversation."""
    last = request.messages[-1].content
    if last.startswith("Observation:"):
        result = last.removeprefix("Observation:").strip()
        return f"Thought: I can answer without using any more tools.\nAnswer: The product is {result}."
    assert not request.tools, "a ReAct agent describes its tools in the prompt"
    return 'Thought: I need to multiply.\nAction: multiply\nAction Input: {"a": 6, "b": 7}'


async def run_agent(agent) -> tuple[str, list[ToolCallResult]]:
    handler = agent.run(user_msg="What is 6 times 7?")
    results = [event async for event in handler.stream_events() if isinstance(event, ToolCallResult)]
    output = await handler
    return str(output.response.content), results


@pytest.mark.parametrize("streaming", [True, False])
@pytest.mark.parametrize(
    ("agent_class", "script"), [(FunctionAgent, function_calling_script), (ReActAgent, react_script)]
)
async def test_agents_call_the_tool_through_the_ensemble(agent_class, script, streaming):
    member = ScriptedMember("scripted", script)
    llm = EnsembleLLM(
        ensemble=Ensemble([ScriptedMember("broken", [RuntimeError("down")]), member], "fallback")
    )
    agent = agent_class(tools=[FunctionTool.from_defaults(multiply)], llm=llm, streaming=streaming)
    answer, results = await run_agent(agent)
    assert [(r.tool_name, r.tool_kwargs, r.tool_output.content) for r in results] == [
        ("multiply", {"a": 6, "b": 7}, "42")
    ]
    assert answer == "The product is 42."
    assert len(member.calls) == 2


# the examples -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def examples():
    """The example scripts as modules (the chat example imports the RAG one, as it does when run)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(EXAMPLES))
        rag = importlib.import_module("llamaindex_rag")
        chat = importlib.import_module("llamaindex_chat_engine")
        yield rag, chat
        sys.modules.pop("llamaindex_rag", None)
        sys.modules.pop("llamaindex_chat_engine", None)


def rag_script(request: Request) -> str:
    """Answers from the context LlamaIndex put in the prompt, so the test sees that retrieval reached it."""
    prompt = "\n".join(m.content for m in request.messages)
    return "Helen Marsh founded it." if "Helen Marsh" in prompt else "I do not know."


@pytest.fixture()
def scripted_rag(examples):
    rag, _ = examples
    member = ScriptedMember("scripted", rag_script)
    index = rag.build_index(embed_model=MockEmbedding(embed_dim=8))
    return rag, index, EnsembleLLM(ensemble=Ensemble([member])), member


def test_rag_example_answers_sync_with_sources(scripted_rag):
    rag, index, llm, member = scripted_rag
    response = rag.ask(index, llm, rag.QUESTION, top_k=len(rag.DOCUMENTS))
    assert response.response == "Helen Marsh founded it."
    assert {n.metadata["title"] for n in response.source_nodes} == set(rag.DOCUMENTS)
    assert rag.QUESTION in member.calls[-1].messages[-1].content


async def test_rag_example_answers_async_and_streaming(scripted_rag):
    rag, index, llm, _ = scripted_rag
    response = await rag.aask(index, llm, rag.QUESTION, top_k=len(rag.DOCUMENTS))
    assert response.response == "Helen Marsh founded it." and response.source_nodes
    streaming = rag.ask_streaming(index, llm, rag.QUESTION, top_k=len(rag.DOCUMENTS))
    assert "".join(streaming.response_gen) == "Helen Marsh founded it." and streaming.source_nodes


def test_chat_engine_example_keeps_the_conversation(examples, scripted_rag):
    _, chat = examples
    rag, index, llm, member = scripted_rag
    engine = chat.chat_engine(index, llm, top_k=len(rag.DOCUMENTS))
    first = engine.chat(chat.TURNS[0])
    assert first.response == "Helen Marsh founded it." and first.source_nodes
    streaming = engine.stream_chat(chat.TURNS[1])
    assert "".join(streaming.response_gen) and streaming.source_nodes
    contents = "\n".join(m.content for request in member.calls[-2:] for m in request.messages)
    assert chat.TURNS[0] in contents and "Helen Marsh founded it." in contents


def test_settings_llm_is_used_by_a_query_engine(scripted_rag):
    """`Settings.llm = EnsembleLLM(...)`: query engines built without an llm argument use the ensemble."""
    rag, index, llm, member = scripted_rag
    previous = Settings._llm
    Settings.llm = llm
    try:
        response = index.as_query_engine(similarity_top_k=len(rag.DOCUMENTS)).query(rag.QUESTION)
    finally:
        Settings._llm = previous
    assert response.response == "Helen Marsh founded it." and len(member.calls) == 1
