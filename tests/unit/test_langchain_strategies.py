"""Every strategy behind EnsembleChatModel keeps the LangChain contract: the trace names the strategy, usage
is the sum over every member call, and a stream ends with one last chunk that alone carries usage and the
trace. Tiny local models stand in for real ones, so strategies that score or step run too."""

from __future__ import annotations

from typing import Any

import pytest

from ensemble_core import Ensemble
from ensemble_core.members.hf import HFMember
from langchain_ensemble import EnsembleChatModel

STRATEGY_PARAMS: dict[str, dict[str, Any]] = {
    "single": {"member": "tiny-b"},
    "fallback": {},
    "cascade": {},
    "vote": {},
    "rule-router": {"default": "tiny-b"},
    "perplexity-router": {},
    "token-fusion": {},
    "contrastive": {},
    "speculative": {},
    "span-fusion": {},
    "step-fusion": {},
    "rank-and-fuse": {"judge": "tiny-a"},
}


@pytest.fixture(scope="module")
def tiny_pair(tiny_model_dir) -> list[HFMember]:
    return [HFMember(tiny_model_dir, name="tiny-a"), HFMember(tiny_model_dir, name="tiny-b")]


def summed_usage(trace: dict[str, Any]) -> tuple[int, int]:
    calls = trace["calls"]
    return sum(c["usage"]["input_tokens"] for c in calls), sum(c["usage"]["output_tokens"] for c in calls)


@pytest.mark.parametrize("strategy", sorted(STRATEGY_PARAMS))
def test_invoke_reports_the_strategy_and_usage_over_every_call(strategy, tiny_pair):
    chat = EnsembleChatModel(
        ensemble=Ensemble(tiny_pair, strategy, **STRATEGY_PARAMS[strategy]), max_tokens=4
    )
    message = chat.invoke("Name a colour.")
    trace = message.response_metadata["ensemble_trace"]
    assert trace["strategy"] == strategy and trace["chosen"]
    usage = message.usage_metadata
    assert (usage["input_tokens"], usage["output_tokens"]) == summed_usage(trace)
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"] > 0


@pytest.mark.parametrize("strategy", sorted(STRATEGY_PARAMS))
async def test_astream_ends_with_one_chunk_carrying_usage_and_trace(strategy, tiny_pair):
    chat = EnsembleChatModel(
        ensemble=Ensemble(tiny_pair, strategy, **STRATEGY_PARAMS[strategy]), max_tokens=4
    )
    chunks = [chunk async for chunk in chat.astream("Name a colour.")]
    with_usage = [c for c in chunks if c.usage_metadata]
    assert with_usage == [chunks[-1]] and chunks[-1].chunk_position == "last"
    trace = chunks[-1].response_metadata["ensemble_trace"]
    assert trace["strategy"] == strategy
    usage = chunks[-1].usage_metadata
    assert (usage["input_tokens"], usage["output_tokens"]) == summed_usage(trace)
