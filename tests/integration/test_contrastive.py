"""Contrastive decoding with packaged members: qwen15 the expert, qwen05 (one tokenizer) or gemma3 (another
tokenizer, in the union vocabulary) the amateur."""

from __future__ import annotations

import pytest

from ensemble_core import Ensemble
from ensemble_core.strategies import Contrastive
from ensemble_core.types import ToolSpec

pytestmark = pytest.mark.integration

QUESTION = "What is the capital of France?"


@pytest.mark.parametrize("amateur", ["qwen05", "gemma3"])
def test_qwen15_contrasted_with_a_smaller_member_answers(request, qwen15, amateur):
    members = [request.getfixturevalue(amateur), qwen15]
    ens = Ensemble(members, Contrastive(beta=0.5))
    result = ens.run(QUESTION, max_tokens=16)
    details = result.trace.details
    assert "Paris" in result.text and result.trace.chosen == "qwen15"
    assert details["expert"] == "qwen15" and details["weights"] == pytest.approx(
        {amateur: -0.5, "qwen15": 1.5}
    )
    assert details["tokenizers"].startswith("shared" if amateur == "qwen05" else "union vocabulary")
    assert 0 < details["agreement"]["qwen15"] <= details["fused_tokens"]
    assert {c.member for c in result.trace.calls} == {amateur, "qwen15"}


def test_a_forced_tool_call_keeps_to_the_grammar(qwen05, qwen15):
    weather = ToolSpec(
        name="get_weather",
        description="The current weather in a city.",
        parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    )
    ens = Ensemble([qwen05, qwen15], Contrastive(beta=1.0))
    result = ens.run("What is the weather in Paris?", tools=[weather], tool_choice="required", max_tokens=48)
    assert result.finish_reason == "tool_calls" and result.trace.details["constrained"] is True
    assert result.tool_calls[0].name == "get_weather" and "Paris" in result.tool_calls[0].arguments["city"]
