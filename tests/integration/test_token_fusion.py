"""TokenFusion with the small pair (SmolLM2 49k vocabulary + Gemma 3 262k): cross-tokenizer identity, a real
fused answer, and streaming."""

from __future__ import annotations

import pytest

from ensemble_core import Ensemble
from ensemble_core.strategies import TokenFusion

pytestmark = pytest.mark.integration

STORY = "Write a short story about a cat who learns to fly."


@pytest.mark.parametrize("lead", ["smollm2", "gemma3"])
def test_full_weight_on_one_member_reproduces_its_greedy_output(small_pair, lead):
    ens = Ensemble(small_pair, TokenFusion(weights={lead: 1.0}))
    result = ens.run(STORY, max_tokens=32)
    alone = ens.members[lead].generate(ens.request(STORY, max_tokens=32))
    assert alone.usage.output_tokens == 32  # the check covers a full 32-token answer
    assert result.text == alone.text
    assert result.trace.details["fused_tokens"] == 32
    assert result.trace.details["tokenizers"].startswith("union vocabulary")
    assert result.trace.details["agreement"][lead] == 32


def test_a_fused_answer_names_the_capital_of_france(small_pair):
    result = Ensemble(small_pair, TokenFusion()).run("What is the capital of France?", max_tokens=24)
    assert "Paris" in result.text
    assert set(result.trace.details["weights"]) == {"smollm2", "gemma3"}


def test_streamed_deltas_join_to_the_final_text(small_pair):
    ens = Ensemble(small_pair, TokenFusion(weights="packllm-sim"))
    deltas = list(ens.stream("Tell me about Paris.", max_tokens=24))
    final = deltas[-1]
    assert final.final and final.trace is not None
    streamed = "".join(d.text for d in deltas[:-1])
    assert len(deltas) > 2 and streamed
    assert streamed == ens.run("Tell me about Paris.", max_tokens=24).text
