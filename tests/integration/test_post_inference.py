"""The cascade and the after-inference strategies on the packaged small pair (SmolLM2, Gemma 3): each
answers a question they both know, and the trace shows that every member was asked."""

from __future__ import annotations

import pytest

from ensemble_core import Ensemble
from ensemble_core.strategies import MBR, Cascade, RankAndFuse, Vote

pytestmark = pytest.mark.integration

QUESTION = "What is the capital of France?"


def asked(result) -> set[str]:
    return {c.member for c in result.trace.calls if c.ok}


@pytest.mark.parametrize(
    "strategy",
    [
        Vote(),
        MBR(),
        MBR(similarity="lexical"),
        Cascade(thresholds=[0.0]),  # a mean log-probability is below 0: always escalates to gemma3
        RankAndFuse(judge="smollm2"),
        RankAndFuse(judge="smollm2", fuser="smollm2", top_k=2),
    ],
    ids=["vote", "mbr-embedding", "mbr-lexical", "cascade-mean-logprob", "rank", "rank-and-fuse"],
)
def test_strategy_answers_with_every_member_asked(small_pair, strategy):
    result = Ensemble(small_pair, strategy).run(QUESTION, max_tokens=24)
    assert "paris" in result.text.lower()
    assert asked(result) == {"smollm2", "gemma3"}
    assert result.usage.output_tokens > 0


def test_cascade_trace_shows_the_escalation_score_and_threshold(small_pair):
    result = Ensemble(small_pair, Cascade(thresholds=[0.0])).run(QUESTION, max_tokens=24)
    first, last = result.trace.details["steps"]
    assert first["member"] == "smollm2" and first["decision"] == "escalated"
    assert first["score"] < 0.0 and first["threshold"] == 0.0
    assert last == {
        "member": "gemma3",
        "decision": "final",
        "score": None,
        "threshold": None,
        "why": "the last member is never escalated from",
    }


def test_cascade_streams_the_last_member_live(small_pair):
    deltas = list(Ensemble(small_pair, Cascade(thresholds=[0.0])).stream(QUESTION, max_tokens=24))
    final = deltas[-1]
    assert final.final and final.trace.chosen == "gemma3"
    assert "paris" in "".join(d.text for d in deltas).lower()
    assert "".join(d.text for d in deltas) == final.trace.calls[-1].text


@pytest.mark.slow
def test_cascade_self_verification_on_smollm2(small_pair):
    result = Ensemble(small_pair, Cascade(scorer="self-verify", thresholds=[1.01])).run(
        QUESTION, max_tokens=24
    )
    step = result.trace.details["steps"][0]
    assert 0.0 < step["score"] < 1.0 and step["decision"] == "escalated"
    assert "paris" in result.text.lower()
    assert [c.role for c in result.trace.calls] == ["attempt", "verify", "final"]


@pytest.mark.slow
@pytest.mark.xfail(
    reason="Gemma 3 270M is a base model: as a fuser it continues the quoted prompt instead of answering"
)
def test_gemma3_as_fuser(small_pair):
    result = Ensemble(small_pair, RankAndFuse(judge="smollm2", fuser="gemma3")).run(QUESTION, max_tokens=24)
    assert "paris" in result.text.lower() and "END" not in result.text
