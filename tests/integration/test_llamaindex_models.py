"""`EnsembleLLM` on the packaged models: answers, streaming, token counting, the RAG and chat-engine examples
with the packaged MiniLM embeddings, and agents (where a 135M model cannot call tools, xfail says so)."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from llama_index.core.agent.workflow import FunctionAgent, ReActAgent, ToolCallResult
from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.callbacks import CallbackManager, TokenCountingHandler
from llama_index.core.tools import FunctionTool

from ensemble_core import Ensemble
from llamaindex_ensemble import EnsembleLLM

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def smol_llm(smollm2):
    return EnsembleLLM(ensemble=Ensemble([smollm2], "single", member="smollm2"), max_tokens=24)


def test_fallback_over_the_small_pair_answers_and_streams(small_pair):
    llm = EnsembleLLM(ensemble=Ensemble(small_pair, "fallback"), max_tokens=16)
    assert llm.metadata.context_window == min(m.context_window for m in small_pair)
    messages = [ChatMessage(role=MessageRole.USER, content="What is the capital of France?")]
    response = llm.chat(messages)
    assert "Paris" in response.message.content
    assert response.raw["trace"].chosen == "smollm2" and response.raw["usage"]["completion_tokens"] > 0
    streamed = list(llm.stream_chat(messages))
    assert "".join(r.delta for r in streamed) == streamed[-1].message.content == response.message.content


async def test_gemma_base_model_completes_async(gemma3):
    llm = EnsembleLLM(ensemble=Ensemble([gemma3], "single", member="gemma3"), max_tokens=12)
    response = await llm.acomplete("What is the capital of France?")
    assert "Paris" in response.text
    chunks = [r async for r in await llm.astream_complete("What is the capital of France?")]
    assert "".join(c.delta for c in chunks) == chunks[-1].text == response.text


def test_token_counter_counts_the_real_usage(smollm2):
    counter = TokenCountingHandler()
    llm = EnsembleLLM(ensemble=Ensemble([smollm2]), max_tokens=8, callback_manager=CallbackManager([counter]))
    response = llm.complete("Name a colour.")
    (event,) = counter.llm_token_counts
    assert event.prompt_token_count == response.raw["usage"]["prompt_tokens"] > 5
    assert 0 < event.completion_token_count == response.raw["usage"]["completion_tokens"] <= 8


# the examples, with the packaged MiniLM embeddings ----------------------------------------------------------
@pytest.fixture(scope="module")
def examples():
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(EXAMPLES))
        yield importlib.import_module("llamaindex_rag"), importlib.import_module("llamaindex_chat_engine")
        sys.modules.pop("llamaindex_rag", None)
        sys.modules.pop("llamaindex_chat_engine", None)


@pytest.fixture(scope="module")
def index(examples):
    return examples[0].build_index()


def _top_source(response) -> str:
    return response.source_nodes[0].metadata["title"]


def test_rag_example_sync(examples, index, smol_llm):
    rag, _ = examples
    response = rag.ask(index, smol_llm, rag.QUESTION)
    assert _top_source(response) == "observatory"
    assert "Marsh" in response.response


async def test_rag_example_async_and_streaming(examples, index, smol_llm):
    rag, _ = examples
    response = await rag.aask(index, smol_llm, rag.QUESTION)
    assert _top_source(response) == "observatory" and "Marsh" in response.response
    streaming = rag.ask_streaming(index, smol_llm, rag.QUESTION)
    assert "".join(streaming.response_gen) == response.response
    assert _top_source(streaming) == "observatory"


def test_chat_engine_example(examples, index, smol_llm):
    _, chat = examples
    engine = chat.chat_engine(index, smol_llm)
    first = engine.chat(chat.TURNS[0])
    assert _top_source(first) == "observatory" and "Marsh" in first.response
    streaming = engine.stream_chat(chat.TURNS[1])
    assert "".join(streaming.response_gen).strip() and streaming.source_nodes


@pytest.mark.slow
@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("llamaindex_rag.py", ["[sync]", "[async]", "[streaming]", "observatory:"]),
        ("llamaindex_chat_engine.py", ["user:", "assistant:"]),
    ],
)
def test_example_scripts_run_offline(script, expected):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script), "--max-tokens", "16"],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert all(marker in done.stdout for marker in expected), done.stdout
    assert "Marsh" in done.stdout


# agents -----------------------------------------------------------------------------------------------------
def multiply(a: int, b: int) -> int:
    """Multiply two integers and return the product."""
    return a * b


@pytest.mark.xfail(
    reason="SmolLM2-135M-Instruct answers in prose instead of emitting a tool call (or ReAct 'Action:' "
    "lines); the mechanism is tested with a scripted member in tests/unit/test_llamaindex_agents_and_rag.py",
    strict=False,
)
@pytest.mark.parametrize("agent_class", [FunctionAgent, ReActAgent])
async def test_agents_with_the_packaged_model_call_the_tool(agent_class, smollm2):
    llm = EnsembleLLM(ensemble=Ensemble([smollm2]), max_tokens=48)
    agent = agent_class(tools=[FunctionTool.from_defaults(multiply)], llm=llm)
    handler = agent.run(user_msg="Use the multiply tool to compute 6 times 7.", max_iterations=3)
    results = [e async for e in handler.stream_events() if isinstance(e, ToolCallResult)]
    await handler
    assert [r.tool_name for r in results] == ["multiply"]
