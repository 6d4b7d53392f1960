"""OpenAICompatMember against a real llama.cpp server serving the packaged SmolLM2 GGUF."""

from __future__ import annotations

import asyncio

import pytest

from ensemble_core import Ensemble
from ensemble_core.members.base import Capability
from ensemble_core.members.openai_compat import OpenAICompatMember
from ensemble_core.types import Message, Params, Request, ToolSpec, merge_tool_call_chunks
from tests.llama_server import free_port

pytestmark = [pytest.mark.integration, pytest.mark.server]

QUESTION = "What is the capital of France?"
# Server and HFMember run the same Q4_1 weights (HFMember de-quantises them exactly); they differ only in
# llama.cpp quantising activations to 8 bits for its dot products and in float summation order. Measured:
# at most 0.022 nats per token over four continuations of 1-11 tokens; 0.1 leaves room and is still 40x
# smaller than the 4.1 nats between " Paris" and " London".
TOLERANCE_PER_TOKEN = 0.1


@pytest.fixture(scope="module")
def member(llama_server: str) -> OpenAICompatMember:
    return OpenAICompatMember(llama_server, "smollm2-q4", name="server", timeout_s=120)


def ask(question: str = QUESTION, max_tokens: int = 24, **fields) -> Request:
    return Request(
        messages=[Message(role="user", content=question)], params=Params(max_tokens=max_tokens), **fields
    )


def test_chat_answers_paris_with_usage_and_logprobs(member: OpenAICompatMember) -> None:
    generation = member.generate(ask())
    assert "Paris" in generation.text
    assert generation.usage.input_tokens > 0 and generation.usage.output_tokens > 0
    assert generation.logprobs is not None and len(generation.logprobs) == generation.usage.output_tokens
    assert "".join(t.token for t in generation.logprobs) == generation.text
    assert all(t.logprob <= 0 for t in generation.logprobs)


def test_stream_deltas_join_to_the_answer_and_usage_is_counted_once(member: OpenAICompatMember) -> None:
    whole = member.generate(ask())
    deltas = list(member.stream(ask()))
    assert sum(1 for d in deltas if d.final) == 1 and deltas[-1].final
    assert len([d for d in deltas if d.text]) > 1, "the answer should arrive in several deltas"
    assert "".join(d.text for d in deltas) == whole.text
    assert deltas[-1].usage is not None
    assert deltas[-1].usage.output_tokens == whole.usage.output_tokens


async def test_async_generate_and_stream_run_concurrently(member: OpenAICompatMember) -> None:
    async def streamed() -> str:
        return "".join([d.text async for d in member.astream(ask())])

    generation, text = await asyncio.gather(member.agenerate(ask()), streamed())
    assert "Paris" in generation.text
    assert text == generation.text


def test_forced_tool_call_is_parsed_whole_and_streamed(member: OpenAICompatMember) -> None:
    weather = ToolSpec(
        name="get_weather",
        description="the weather in a city",
        parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    )
    request = ask("What is the weather in Paris?", max_tokens=40, tools=[weather], tool_choice="get_weather")
    generation = member.generate(request)
    assert generation.finish_reason == "tool_calls"
    assert [c.name for c in generation.tool_calls] == ["get_weather"]
    assert isinstance(generation.tool_calls[0].arguments.get("city"), str)
    deltas = list(member.stream(request))
    streamed = merge_tool_call_chunks([c for d in deltas for c in d.tool_call_chunks])
    assert [(c.name, c.arguments) for c in streamed] == [(c.name, c.arguments) for c in generation.tool_calls]
    assert deltas[-1].finish_reason == "tool_calls"


def test_score_ranks_paris_above_london_and_agrees_with_the_local_model(
    member: OpenAICompatMember, smollm2
) -> None:
    assert member.has(Capability.SCORE), member.probe().reason
    pairs = [
        ("The capital of France is", " Paris"),
        ("The capital of France is", " London"),
        ("Once upon a time", " there was a little girl who lived in a village."),
    ]
    remote, local = member.score(pairs), smollm2.score(pairs)
    assert remote[0].sum_logprob > remote[1].sum_logprob
    for r, h in zip(remote, local, strict=True):
        assert r.n_tokens == h.n_tokens
        assert abs(r.sum_logprob - h.sum_logprob) <= TOLERANCE_PER_TOKEN * r.n_tokens


async def test_async_score_matches_sync_score(member: OpenAICompatMember) -> None:
    pairs = [("The capital of France is", " Paris"), ("The capital of France is", " London")]
    assert [s.sum_logprob for s in await member.ascore(pairs)] == pytest.approx(
        [s.sum_logprob for s in member.score(pairs)], abs=1e-4
    )


def test_fallback_skips_a_dead_server_quickly(member: OpenAICompatMember) -> None:
    dead = OpenAICompatMember(
        f"http://127.0.0.1:{free_port()}/v1", "none", name="dead", timeout_s=2, max_retries=0
    )
    ensemble = Ensemble([dead, member], "fallback")
    for _ in range(2):  # sync runs share the bridge loop: the async client and its pool stay usable
        result = ensemble.run(QUESTION, max_tokens=24)
        assert "Paris" in result.text
        failed, answered = result.trace.calls
        assert (failed.member, failed.ok, answered.member, answered.ok) == ("dead", False, "server", True)
        assert "cannot connect" in (failed.error or "")
        assert failed.latency_s < 2
    deltas = list(ensemble.stream(QUESTION, max_tokens=24))
    assert "Paris" in "".join(d.text for d in deltas)
    assert [c.ok for c in deltas[-1].trace.calls] == [False, True]
