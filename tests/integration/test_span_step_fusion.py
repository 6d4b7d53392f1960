"""Span and step fusion on the packaged small pair (SmolLM2-135M-Instruct, chat; Gemma 3 270M, plain
Q/A)."""

from __future__ import annotations

import re

import pytest

from ensemble_core import Ensemble
from ensemble_core.members.openai_compat import OpenAICompatMember
from ensemble_core.strategies import SpanFusion, StepFusion

pytestmark = pytest.mark.integration

GSM8K_STYLE = "Tom has 3 apples and buys 5 more. How many apples does he have now?"


@pytest.fixture(scope="module")
def span_ensemble(small_pair):
    return Ensemble(small_pair, SpanFusion())


@pytest.fixture(scope="module")
def step_ensemble(small_pair):
    return Ensemble(small_pair, StepFusion(step_tokens=20, max_steps=4))


@pytest.fixture(scope="module")
def step_result(step_ensemble):
    return step_ensemble.run(GSM8K_STYLE, max_tokens=48)


async def test_span_fusion_answers_the_capital_of_france(span_ensemble):
    result = await span_ensemble.arun("What is the capital of France?", max_tokens=32)
    assert "Paris" in result.text
    rounds = result.trace.details["rounds"]
    assert result.text == "".join(r["text"] for r in rounds if "text" in r)
    assert {r["winner"] for r in rounds if "winner" in r} <= {"smollm2", "gemma3"}
    assert {c.member for c in result.trace.calls if c.role == "propose span"} == {"smollm2", "gemma3"}


@pytest.mark.parametrize("name", ["smollm2", "gemma3"])
async def test_one_member_continuing_its_own_spans_gives_its_own_answer(small_pair, name):
    """The prefill hook continues exactly where the text stops (chat template and plain Q/A format alike), so
    a member that only ever agrees with itself writes its own greedy answer (the first span's leading space,
    which the plain format writes after "Answer:", is dropped)."""
    member = next(m for m in small_pair if m.name == name)
    question = "What is the capital of France?"
    alone = await Ensemble([member], "single", member=name).arun(question, max_tokens=32)
    fused = await Ensemble([member], SpanFusion()).arun(question, max_tokens=32)
    assert alone.finish_reason == "stop"
    assert fused.text == alone.text.strip()
    assert len(fused.trace.details["rounds"]) > 1 or len(alone.text.split()) <= 3


async def test_span_fusion_stream_joins_to_the_result(span_ensemble):
    question = "What is the capital of Italy?"
    result = await span_ensemble.arun(question, max_tokens=16)
    deltas = [d async for d in span_ensemble.astream(question, max_tokens=16)]
    assert "".join(d.text for d in deltas) == result.text  # greedy: the same spans, yielded as accepted
    assert deltas[-1].final and deltas[-1].usage.total_tokens > 0


@pytest.mark.server
@pytest.mark.slow
def test_span_fusion_with_a_llama_cpp_server_member(llama_server, gemma3):
    """llama.cpp ignores the assistant prefill and starts over (the repetition is removed), and it cannot
    score every token (the scorer is dropped for the round, the trace says why): the ensemble still
    answers."""
    server = OpenAICompatMember(llama_server, "smollm2-q4", name="server", timeout_s=120)
    result = Ensemble([server, gemma3], SpanFusion()).run("What is the capital of France?", max_tokens=24)
    assert "Paris" in result.text
    rounds = result.trace.details["rounds"]
    assert all("server" in r["proposals"] for r in rounds)
    assert result.text == "".join(r["text"] for r in rounds if "text" in r)


def test_step_fusion_writes_steps_scored_by_both_members(step_result):
    rounds = step_result.trace.details["rounds"]
    steps = [r["text"] for r in rounds if "text" in r]
    assert steps and step_result.text == "\n".join(steps)
    disputed = [r for r in rounds if "scores" in r]  # rounds where the members proposed different steps
    assert disputed, f"the members proposed the same step in every round: {rounds}"
    for r in disputed:  # both scored every candidate, and the least surprising one won
        assert set(r["perplexity"]) == {"smollm2", "gemma3"}
        assert r["text"] == r["candidates"][min(range(len(r["scores"])), key=r["scores"].__getitem__)]


async def test_step_fusion_stream_joins_to_the_result(step_ensemble, step_result):
    deltas = [d async for d in step_ensemble.astream(GSM8K_STYLE, max_tokens=48)]
    assert "".join(d.text for d in deltas) == step_result.text


def test_step_fusion_reaches_the_right_final_answer(step_result):
    """Greedy and deterministic on CPU float32: the fused steps end with the right answer here (a single easy
    question; 135M/270M members get most GSM8K items wrong, fused or not)."""
    assert re.search(r"(The answer is|####)\s*8\b", step_result.text)
