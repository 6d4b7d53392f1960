"""Speculative decoding with the packaged pair that shares a tokenizer: qwen05 drafting for qwen15.

The exactness check runs the shipped configs/speculative.yaml, qwen15 in float32 (marked slow: about two
minutes on 2 CPU cores; run with --runslow): in bfloat16 a pass over several tokens rounds differently than a
one-token step, so where qwen15's two best tokens tie the answers can part (transformers' assisted
generation does the same).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ensemble_core import CapabilityError, Ensemble

pytestmark = pytest.mark.integration

PROMPTS = [
    "Write a Python function that checks whether a number is prime.",
    "What is the capital of France?",
]


def _packaged(model: str, **kwargs):
    from ensemble_core.members import packaged

    member = getattr(packaged, model)(**kwargs)
    member.load()
    return member


@pytest.fixture(scope="module")
def qwen_pair(qwen05, qwen15):
    return qwen05, qwen15


@pytest.mark.slow
def test_the_shipped_config_answers_with_qwen15s_own_tokens():
    """configs/speculative.yaml: an int8 qwen05 drafting, qwen15 in float32 (packed) verifying."""
    ens = Ensemble.from_config(Path(__file__).parents[2] / "configs" / "speculative.yaml")
    drafter, verifier = ens.members["qwen05"], ens.members["qwen15"]
    assert drafter.quantization == "int8" and verifier.pack_weights
    for prompt in PROMPTS:
        result = ens.run(prompt, max_tokens=24)
        alone = verifier.generate(ens.request(prompt, max_tokens=24))
        assert result.text == alone.text
        assert result.trace.details["tokens"] == alone.usage.output_tokens
        assert result.trace.details["accepted"] > 0


def test_qwen05_drafts_most_of_qwen15s_answer(qwen_pair):
    ens = Ensemble(list(qwen_pair), "speculative")
    result = ens.run(PROMPTS[1], max_tokens=16)
    details = result.trace.details
    assert "Paris" in result.text and result.trace.chosen == "qwen15"
    assert details["tokenizers"] == "shared"
    assert details["acceptance_rate"] > 0.5 and details["tokens_per_pass"] > 2
    deltas = list(ens.stream(PROMPTS[1], max_tokens=16))
    assert "".join(d.text for d in deltas[:-1]) == result.text


def test_a_sliding_window_model_is_refused_with_the_reason(small_pair):
    smollm2, gemma3 = small_pair
    drafter = _packaged("gemma3", name="gemma3_drafter")  # one tokenizer: only the cache is in the way
    with pytest.raises(CapabilityError, match="'gemma3'.*cannot take back tokens.*sliding-window"):
        Ensemble([drafter, gemma3], "speculative").run("Hello", max_tokens=4)
    with pytest.raises(CapabilityError, match="different tokenizers.*'smollm2''s cannot spell every byte"):
        Ensemble([smollm2, gemma3], "speculative").run("Hello", max_tokens=4)
