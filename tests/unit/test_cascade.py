"""Cascade: escalation by score and threshold, scorers, failures, streaming, tool calls, calibration."""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import pytest

from ensemble_core import Ensemble
from ensemble_core.errors import AllMembersFailedError, CapabilityError, ConfigError
from ensemble_core.members.base import Price
from ensemble_core.members.scripted import ScriptedMember
from ensemble_core.scoring.confidence import Agreement, ConfidenceScorer
from ensemble_core.strategies import Cascade
from ensemble_core.strategies.cascade_calibration import CascadeRecord, MemberOutcome
from ensemble_core.strategies.registry import build_strategy
from ensemble_core.types import ToolCall, ToolSpec
from tests.unit.strategy_helpers import LogprobMember, ScoringMember


class Fixed(ConfidenceScorer):
    """A scorer that gives each member a fixed score (for testing the escalation logic alone)."""

    kind: Literal["fixed"] = "fixed"
    default_threshold: ClassVar[float] = 0.5
    scores: dict[str, float]

    async def confidence(self, ctx, member, request, answer):
        return self.scores[member.name]


def trio(**kwargs) -> list[ScriptedMember]:
    return [
        ScriptedMember("small", ["small says Lyon"], **kwargs.get("small", {})),
        ScriptedMember("medium", ["medium says Paris"], **kwargs.get("medium", {})),
        ScriptedMember("large", ["large says Paris"], **kwargs.get("large", {})),
    ]


def steps(result) -> list[tuple[str, str]]:
    return [(s["member"], s["decision"]) for s in result.trace.details["steps"]]


def test_a_confident_cheap_answer_is_accepted_without_asking_the_rest():
    members = trio()
    cascade = Cascade(scorer=Fixed(scores={"small": 0.9, "medium": 0.9}), thresholds=[0.8, 0.8])
    result = Ensemble(members, cascade).run("Capital of France?")
    assert result.text == "small says Lyon"
    assert [len(m.calls) for m in members] == [1, 0, 0]
    step = result.trace.details["steps"][0]
    assert (step["score"], step["threshold"], step["decision"]) == (0.9, 0.8, "accepted")
    assert result.trace.calls[0].score == 0.9


def test_unsure_steps_escalate_and_the_trace_says_why():
    cascade = Cascade(scorer=Fixed(scores={"small": 0.2, "medium": 0.7}), thresholds=[0.5, 0.8])
    result = Ensemble(trio(), cascade).run("Capital of France?")
    assert result.text == "large says Paris"
    assert steps(result) == [("small", "escalated"), ("medium", "escalated"), ("large", "final")]
    assert "0.7 < threshold 0.8" in result.trace.details["steps"][1]["why"]


def test_default_order_is_cheapest_first_by_price():
    pricey = Price(input_per_token=1e-5, output_per_token=3e-5)
    members = [
        ScriptedMember("api", ["api answer"], price=pricey),
        ScriptedMember("local", ["local answer"]),
    ]
    result = Ensemble(members, Cascade(scorer=Fixed(scores={"local": 0.0}))).run("Hi there")
    assert [s[0] for s in steps(result)] == ["local", "api"]
    assert result.trace.cost == pytest.approx(pricey.cost(result.trace.calls[-1].usage))
    assert result.trace.cost > 0


def test_wrong_number_of_thresholds_is_a_config_error():
    with pytest.raises(ConfigError, match="one per step except the last"):
        Ensemble(trio(), Cascade(thresholds=[0.1]))


def test_self_verify_needs_the_score_capability():
    with pytest.raises(CapabilityError, match="self-verify"):
        Ensemble(trio(), Cascade(scorer="self-verify"))


def test_scorer_is_configured_by_kind_and_round_trips():
    cascade = build_strategy(
        "cascade", {"scorer": {"kind": "agreement", "samples": 3}, "members": ["a", "b"]}
    )
    assert isinstance(cascade.scorer, Agreement) and cascade.scorer.samples == 3
    assert Cascade.model_validate(cascade.model_dump()).scorer == cascade.scorer
    with pytest.raises(ConfigError, match="unknown scorer kind"):
        build_strategy("cascade", {"scorer": "vibes"})


def test_a_failing_or_timed_out_member_escalates():
    members = trio(small={"timeout_s": 0.05, "delay_s": 5})
    members[1].script = [RuntimeError("rate limited")]
    result = Ensemble(members, Cascade(scorer=Fixed(scores={}))).run("?")
    assert result.text == "large says Paris"
    assert steps(result) == [("small", "failed"), ("medium", "failed"), ("large", "final")]
    assert {c.member: c.error for c in result.trace.calls if not c.ok} == {
        "small": "timed out",
        "medium": "RuntimeError: rate limited",
    }


def test_when_the_last_member_fails_the_most_confident_earlier_answer_stands():
    members = trio()
    members[2].script = [RuntimeError("overloaded")]
    cascade = Cascade(scorer=Fixed(scores={"small": 0.1, "medium": 0.3}))
    result = Ensemble(members, cascade).run("?")
    assert result.text == "medium says Paris"
    assert "every later member failed" in result.trace.reason
    members = trio()
    members[2].script = [RuntimeError("overloaded")]
    streamed = list(Ensemble(members, cascade).stream("?"))
    assert "".join(d.text for d in streamed) == "medium says Paris"
    assert streamed[-1].trace.chosen == "medium"


def test_every_member_failing_says_why_each_failed():
    members = [ScriptedMember("a", [RuntimeError("quota")]), ScriptedMember("b", [TimeoutError()])]
    with pytest.raises(AllMembersFailedError, match="quota") as caught:
        Ensemble(members, Cascade(scorer=Fixed(scores={}))).run("?")
    assert set(caught.value.errors) == {"a", "b"}


def test_a_scorer_error_escalates_and_is_traced():
    members = trio()
    result = Ensemble(members[:2], Cascade(scorer="mean-logprob")).run("?")
    assert result.text == "medium says Paris"
    assert "no score" in result.trace.details["steps"][0]["why"]
    assert "returned no token logprobs" in result.trace.details["steps"][0]["why"]


def test_mean_logprob_scorer_reads_the_generation_logprobs():
    members = [
        LogprobMember("unsure", ["maybe Lyon"], logprob=-2.0),
        LogprobMember("sure", ["Paris"], logprob=-0.1),
    ]
    result = Ensemble(members, Cascade(thresholds=[-1.0])).run("?")
    assert result.text == "Paris"
    assert result.trace.details["steps"][0]["score"] == pytest.approx(-2.0)
    members = [LogprobMember("confident", ["Paris"], logprob=-0.2), members[1]]
    assert Ensemble(members, Cascade(thresholds=[-1.0])).run("?").trace.chosen == "confident"


def test_mean_logprob_scores_with_the_member_when_it_returned_no_logprobs(tiny_member):
    members = [tiny_member, ScriptedMember("big", ["Paris"])]
    result = Ensemble(members, Cascade(thresholds=[0.0])).run("Capital of France?", max_tokens=4)
    step = result.trace.details["steps"][0]
    assert step["decision"] == "escalated" and step["score"] < 0.0  # a log-probability is never >= 0 here
    assert result.text == "Paris"


def test_self_verification_is_the_probability_of_yes_against_no():
    verifier = ScoringMember("small", ["Lyon"], scorer=lambda p, c: -0.2 if c.strip() == "Yes" else -1.8)
    result = Ensemble([verifier, ScriptedMember("large", ["Paris"])], Cascade(scorer="self-verify")).run(
        "Capital?"
    )
    assert {c.strip() for _, c in verifier.scored} == {"Yes", "No"}
    prompt = verifier.scored[0][0]
    assert "Lyon" in prompt and "Is your previous answer correct?" in prompt
    step = result.trace.details["steps"][0]
    assert step["score"] == pytest.approx(1 / (1 + math.exp(-1.6)))  # P(Yes) = e^-0.2 / (e^-0.2 + e^-1.8)
    assert result.trace.chosen == "small"
    assert any(c.role == "verify" for c in result.trace.calls)


def test_self_verification_on_a_real_model_gives_a_probability(tiny_member):
    members = [tiny_member, ScriptedMember("large", ["Paris"])]
    result = Ensemble(members, Cascade(scorer="self-verify", thresholds=[1.01])).run("Capital?", max_tokens=4)
    assert 0.0 < result.trace.details["steps"][0]["score"] < 1.0
    assert result.text == "Paris"


def test_agreement_samples_with_temperature_and_seeds():
    small = ScriptedMember("small", ["#### 12", "#### 12", "#### 13", "12", "#### 12"])
    scorer = {"kind": "agreement", "samples": 4, "temperature": 0.8}
    result = Ensemble([small, ScriptedMember("large", ["14"])], Cascade(scorer=scorer, thresholds=[0.7])).run(
        "?"
    )
    assert result.trace.details["steps"][0]["score"] == 0.75
    assert result.trace.chosen == "small"
    sampled = small.calls[1:]
    assert [r.params.seed for r in sampled] == [1, 2, 3, 4] and {r.params.temperature for r in sampled} == {
        0.8
    }


def test_streaming_joins_to_the_final_text_for_accepted_and_escalated_answers():
    accept = Ensemble(trio(), Cascade(scorer=Fixed(scores={"small": 1.0, "medium": 1.0})))
    deltas = list(accept.stream("?"))
    assert "".join(d.text for d in deltas) == "small says Lyon" and deltas[-1].trace.chosen == "small"
    escalate = Ensemble(trio(), Cascade(scorer=Fixed(scores={"small": 0.0, "medium": 0.0})))
    deltas = list(escalate.stream("?"))
    assert "".join(d.text for d in deltas) == "large says Paris"
    assert len([d for d in deltas if d.text]) == 3  # the last member streams live, word by word
    assert deltas[-1].final and deltas[-1].usage.output_tokens == 9


def test_a_tool_call_answer_passes_through_intact():
    call = ToolCall(name="weather", arguments={"city": "Paris"})
    members = [ScriptedMember("small", [call]), ScriptedMember("large", ["It is sunny."])]
    tools = [ToolSpec(name="weather")]
    result = Ensemble(members, Cascade(scorer=Fixed(scores={"small": 1.0}))).run("Weather?", tools=tools)
    assert result.tool_calls == [call] and result.finish_reason == "tool_calls"


def test_multi_turn_conversations_reach_every_step():
    members = trio()
    messages = [
        {"role": "user", "content": "What is 6 times 7?"},
        {"role": "assistant", "content": "42"},
        {"role": "user", "content": "and 7 times 8?"},
    ]
    Ensemble(members, Cascade(scorer=Fixed(scores={"small": 0.0, "medium": 0.0}))).run(messages)
    assert all(len(m.calls[0].messages) == 3 for m in members)


# calibration
# ------------------------------------------------------------------------------------------------------
def dev_set(priced: bool = True) -> list[CascadeRecord]:
    """The cheap member is right exactly when its score is high (>= 0.6); the expensive one is always right.
    Unpriced (local models), they cost only their latency."""
    records = []
    for i in range(20):
        score = i / 20
        records.append(
            CascadeRecord(
                outcomes={
                    "cheap": MemberOutcome(
                        score=score, quality=float(score >= 0.6), cost=1.0 * priced, latency_s=0.1
                    ),
                    "expensive": MemberOutcome(quality=1.0, cost=10.0 * priced, latency_s=2.0),
                }
            )
        )
    return records


def test_calibrate_for_a_target_quality_finds_the_cheapest_thresholds():
    cascade = Cascade(members=["cheap", "expensive"]).calibrate(dev_set(), target_quality=1.0)
    assert cascade.thresholds is not None and 0.55 < cascade.thresholds[0] <= 0.6
    point = next(p for p in cascade.curve(dev_set()) if p.thresholds == cascade.thresholds)
    assert point.quality == 1.0 and point.shares["cheap"] == pytest.approx(0.4)
    assert point.cost == pytest.approx(1.0 + 0.6 * 10.0)


def test_calibrate_for_a_budget_in_money_or_time():
    cascade = Cascade(members=["cheap", "expensive"])
    cheap_only = cascade.calibrate(dev_set(), budget=1.0)
    assert cheap_only.thresholds[0] <= 0.0  # within budget only the cheap member answers
    by_time = cascade.calibrate(dev_set(), budget=0.1 + 0.6 * 2.0, cost="latency")
    assert 0.55 < by_time.thresholds[0] <= 0.6


def test_without_prices_the_cost_is_latency():
    curve = Cascade(members=["cheap", "expensive"]).curve(dev_set(priced=False))
    assert curve[-1].quality == 1.0
    assert curve[-1].cost == pytest.approx(0.1 + 0.6 * 2.0)  # seconds: cheap always, expensive for 60%


def test_curve_trades_cost_for_quality():
    curve = Cascade(members=["cheap", "expensive"]).curve(dev_set())
    assert [p.cost for p in curve] == sorted(p.cost for p in curve)
    assert [p.quality for p in curve] == sorted(p.quality for p in curve)
    assert curve[0].quality == pytest.approx(0.4) and curve[-1].quality == 1.0


def test_impossible_targets_say_what_is_reachable():
    cascade = Cascade(members=["cheap", "expensive"])
    with pytest.raises(ConfigError, match="raise the budget"):
        cascade.calibrate(dev_set(), budget=0.5)
    with pytest.raises(ConfigError, match="exactly one"):
        cascade.calibrate(dev_set())


def test_record_runs_every_member_and_grades_it():
    members = [
        ScriptedMember("cheap", ["Lyon"]),
        ScriptedMember("expensive", ["Paris"], price=Price(input_per_token=0.5)),
    ]
    cascade = Cascade(scorer=Fixed(scores={"cheap": 0.3}))
    record = cascade.record(
        members, Ensemble(members).request("Capital of France?"), lambda g: float("Paris" in g.text)
    )
    assert list(record.outcomes) == ["cheap", "expensive"]
    assert record.outcomes["cheap"].model_dump(include={"score", "quality"}) == {"score": 0.3, "quality": 0.0}
    assert (
        record.outcomes["expensive"].quality == 1.0 and record.outcomes["expensive"].cost == 1.5
    )  # 3 prompt words at 0.5
