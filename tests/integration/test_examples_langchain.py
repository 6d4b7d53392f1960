"""The LangChain examples: each runs as it is (a subprocess on the packaged models), and its building blocks
are checked with scripted members where a 135M model cannot be relied on (tool calls)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from ensemble_core.members.scripted import ScriptedMember
from ensemble_core.types import Request, ToolCall
from langchain_ensemble import EnsembleChatModel

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"examples_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_example(name: str, *args: str) -> str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(EXAMPLES.parent)}
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / f"{name}.py"), *args],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


# building blocks with scripted members
# ---------------------------------------------------------------------------
def test_agent_calls_the_tool_and_answers_from_its_result():
    agent_example = load_example("langchain_agent")

    def script(request: Request) -> str | ToolCall:
        last = request.messages[-1]
        if last.role == "tool":
            return f"According to the tool, {last.content}"
        return ToolCall(name="lookup_population", arguments={"city": "Lyon"})

    model = EnsembleChatModel(
        members=[ScriptedMember("down", [RuntimeError("x")]), ScriptedMember("agent", script)]
    )
    messages = agent_example.run_agent(model, agent_example.QUESTION)
    assert [m.type for m in messages] == ["human", "ai", "tool", "ai"]
    assert messages[1].tool_calls[0]["args"] == {"city": "Lyon"}
    assert messages[2].content == "Lyon has 522,250 inhabitants."
    assert "522,250" in messages[3].text


def test_langgraph_streams_the_ensembles_tokens_from_the_node():
    graph_example = load_example("langchain_langgraph_streaming")
    model = EnsembleChatModel(members=[ScriptedMember("writer", ["Paris is the capital of France."])])
    pieces = list(graph_example.stream_tokens(graph_example.build_graph(model), "Paris?"))
    assert pieces == [("answer", w) for w in ["Paris", " is", " the", " capital", " of", " France."]]


@pytest.mark.integration
def test_rag_chain_puts_the_retrieved_documents_in_the_prompt():
    rag_example = load_example("langchain_rag")
    seen: list[Request] = []

    def script(request: Request) -> str:
        seen.append(request)
        return "Helen Marsh."

    chain = rag_example.build_chain(
        rag_example.build_store(), EnsembleChatModel(members=[ScriptedMember("s", script)])
    )
    assert chain.invoke("Who founded the Larkspur Observatory?") == "Helen Marsh."
    system = seen[0].messages[0].content
    assert "founded in 1897 by the astronomer Helen Marsh" in system
    assert "sheep's milk" not in system  # the cheese document is not among the top 2


# the examples as they are, on the packaged models
# ----------------------------------------------------------------
@pytest.mark.integration
def test_rag_example_runs():
    out = run_example("langchain_rag", "--max-tokens", "16")
    assert "retrieved: observatory" in out and "[invoke]" in out and "[stream]" in out


@pytest.mark.integration
def test_agent_example_runs_on_the_real_model():
    out = run_example("langchain_agent", "--max-tokens", "48")
    assert out.startswith("[human] How many people live in Lyon?")
    assert "[ai] calls lookup_population({'city': 'Lyon'})" in out and "[tool] Lyon has 522,250" in out
    assert out.rstrip().splitlines()[-1].startswith("[ai] ")


@pytest.mark.integration
def test_langgraph_example_streams_tokens():
    out = run_example("langchain_langgraph_streaming", "--max-tokens", "16")
    pieces = int(out.rsplit("(", 1)[1].split()[0])
    assert pieces > 1


@pytest.mark.integration
def test_cascade_example_prints_the_trace():
    out = run_example("langchain_cascade", "--max-tokens", "12")
    assert "strategy: cascade" in out and "chosen:" in out
    assert "step smollm2: accepted" in out  # the lenient threshold keeps the cheap answer
    assert "step smollm2: escalated" in out and "step gemma3: final" in out  # the strict one escalates
    assert "usage over every member call" in out
