"""Vote and MBR over scripted members: majority, normalisation, ties, sampling, tool calls, failures,
overlap."""

from __future__ import annotations

import numpy as np
import pytest

from ensemble_core import Ensemble
from ensemble_core.errors import AllMembersFailedError
from ensemble_core.members.scripted import ScriptedMember
from ensemble_core.scoring.answers import choice_letter, final_number, normalise_auto, normalise_text
from ensemble_core.scoring.similarity import char_ngram_f, lexical_similarity, token_f1
from ensemble_core.strategies import MBR, Vote
from ensemble_core.types import ToolCall, ToolSpec
from tests.unit.strategy_helpers import Clock, LogprobMember


def scripted(**replies) -> list[ScriptedMember]:
    return [ScriptedMember(name, [reply]) for name, reply in replies.items()]


# answer keys and similarity
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("so she has #### 1,234", "1234"),
        ("3 apples then 7.50 dollars", "7.5"),
        ("-4.0", "-4"),
        ("none", None),
    ],
)
def test_final_number(text, number):
    assert final_number(text) == number


@pytest.mark.parametrize(
    ("text", "letter"),
    [("The answer is (C).", "C"), ("B. Paris", "B"), ("answer: D", "D"), ("A cat sat", None)],
)
def test_choice_letter(text, letter):
    assert choice_letter(text) == letter


def test_auto_normaliser_reads_gsm8k_marks_letters_and_text():
    assert normalise_auto("Step by step... #### 42") == normalise_auto("42.")
    assert normalise_auto("b") == "B"
    assert normalise_text("  The capital is PARIS! ") == "the capital is paris"


def test_lexical_similarity_is_symmetric_and_ranks_overlap():
    assert token_f1("Paris is the capital", "the capital is Paris") == 1.0
    assert char_ngram_f("Paris", "Lyon") < char_ngram_f("Paris", "Paris, France") <= 1.0
    matrix = lexical_similarity(["Paris", "Paris, France", "Lyon"])
    assert np.allclose(matrix, matrix.T)
    assert matrix[0, 1] > matrix[0, 2]


# Vote
# ----------------------------------------------------------------------------------------------------
def test_vote_takes_the_majority_of_normalised_answers():
    members = scripted(a="Lyon", b="Paris.", c="  paris", d="PARIS!")
    result = Ensemble(members, "vote").run("Capital of France?")
    assert result.text in {"Paris.", "  paris", "PARIS!"}
    votes = {v["answer"]: v["count"] for v in result.trace.details["votes"]}
    assert votes == {"lyon": 1, "paris": 3}
    assert {c.member for c in result.trace.calls} == {"a", "b", "c", "d"}


def test_vote_number_normaliser_groups_math_answers():
    members = scripted(a="She pays 5 + 37 = 42 dollars. #### 42", b="The answer is 42", c="#### 41")
    result = Ensemble(members, Vote(normaliser="number")).run("How much?")
    assert result.trace.details["winner"] == "42"
    assert result.trace.chosen in {"a", "b"}


def test_vote_accepts_a_custom_normaliser():
    members = scripted(a="Yes, certainly", b="yes", c="No")
    result = Ensemble(members, Vote(normaliser=lambda t: t.lower().startswith("yes") and "yes" or "no")).run(
        "?"
    )
    assert result.trace.details["winner"] == "yes"


def test_vote_tie_goes_to_the_higher_mean_logprob():
    members = [
        LogprobMember("unsure", ["Lyon"], logprob=-3.0),
        LogprobMember("sure", ["Paris"], logprob=-0.1),
    ]
    result = Ensemble(members, "vote").run("Capital of France?")
    assert result.text == "Paris"
    assert "tie" in result.trace.reason


def test_vote_tie_without_logprobs_goes_to_member_order():
    result = Ensemble(scripted(first="Lyon", second="Paris"), "vote").run("?")
    assert result.text == "Lyon"


def test_self_consistency_samples_one_member_with_distinct_seeds():
    member = ScriptedMember("solo", ["#### 7", "#### 8", "7", "#### 7", "9"])
    result = Ensemble([member], Vote(samples_per_member=5, temperature=0.9)).run("3+4?", seed=10)
    assert result.trace.details["winner"] == "7"
    assert sorted(r.params.seed for r in member.calls) == [10, 11, 12, 13, 14]
    assert {r.params.temperature for r in member.calls} == {0.9}
    assert [c.role for c in result.trace.calls] == ["sample"] * 5


def test_tool_calls_vote_by_name_and_arguments_and_survive_intact():
    def weather() -> ToolCall:
        return ToolCall(name="weather", arguments={"city": "Paris"})

    calls = [weather(), weather(), ToolCall(name="weather", arguments={"city": "Rome"})]
    members = [ScriptedMember(n, [c]) for n, c in zip("abc", calls, strict=True)]
    tools = [
        ToolSpec(name="weather", parameters={"type": "object", "properties": {"city": {"type": "string"}}})
    ]
    result = Ensemble(members, "vote").run("Weather in Paris?", tools=tools)
    assert len(result.tool_calls) == 1
    assert result.tool_calls[0] in calls[:2]
    assert result.finish_reason == "tool_calls"


def test_failing_and_timed_out_members_are_dropped_and_traced():
    members = [
        ScriptedMember("ok", ["Paris"]),
        ScriptedMember("broken", [RuntimeError("no GPU")]),
        ScriptedMember("slow", ["Lyon"], delay_s=5, timeout_s=0.05),
    ]
    result = Ensemble(members, "vote").run("?")
    assert result.text == "Paris"
    errors = {c.member: c.error for c in result.trace.calls if not c.ok}
    assert errors == {"broken": "RuntimeError: no GPU", "slow": "timed out"}


def test_every_member_failing_says_why_each_failed():
    members = [
        ScriptedMember("a", [RuntimeError("disk full")]),
        ScriptedMember("b", [ValueError("bad json")]),
    ]
    with pytest.raises(AllMembersFailedError, match="disk full") as caught:
        Ensemble(members, "vote").run("?")
    assert set(caught.value.errors) == {"a", "b"}
    assert "bad json" in str(caught.value)


def test_vote_members_are_asked_concurrently():
    clock = Clock()
    members = [ScriptedMember(n, clock.reply(n, "Paris"), delay_s=0.2) for n in "abcd"]
    result = Ensemble(members, "vote").run("?")
    assert clock.overlap(result.trace, list("abcd"))


def test_vote_stream_joins_to_the_result_text():
    ens = Ensemble(scripted(a="Paris is the capital", b="paris is the capital", c="Lyon"), "vote")
    deltas = list(ens.stream("?"))
    assert deltas[-1].final and deltas[-1].trace.chosen in {"a", "b"}
    assert "".join(d.text for d in deltas).lower() == "paris is the capital"


# MBR
# ----------------------------------------------------------------------------------------------------
def test_mbr_picks_the_consensus_answer_lexically():
    members = scripted(
        a="Paris is the capital of France.", b="The capital of France is Paris.", c="Berlin, I think."
    )
    result = Ensemble(members, MBR(similarity="lexical")).run("Capital of France?")
    assert result.trace.chosen in {"a", "b"}
    scores = result.trace.details["mbr_scores"]
    assert scores[2] < min(scores[:2])


def test_mbr_uses_any_embedding_similarity():
    vectors = {"x": [1.0, 0.0], "y": [0.9, 0.1], "z": [0.0, 1.0]}

    def cosine(texts):
        v = np.array([vectors[t] for t in texts])
        v = v / np.linalg.norm(v, axis=1, keepdims=True)
        return v @ v.T

    result = Ensemble(scripted(a="z", b="x", c="y"), MBR(similarity=cosine)).run("?")
    assert result.text in {"x", "y"}


def test_mbr_drops_failures_and_returns_a_lone_answer():
    members = [ScriptedMember("a", [RuntimeError("down")]), ScriptedMember("b", ["Paris"])]
    result = Ensemble(members, MBR(similarity="lexical")).run("?")
    assert result.text == "Paris"
    assert [c.ok for c in result.trace.calls if c.member == "a"] == [False]


def test_mbr_and_vote_are_configured_by_name():
    ens = Ensemble(scripted(a="1", b="1"), "mbr", similarity="lexical", members=["a"])
    assert [m.name for m in ens.members_used()] == ["a"]
    assert Ensemble(scripted(a="1"), "vote", normaliser="number").strategy.normaliser == "number"


def test_mbr_returns_a_consensus_tool_call_intact_and_streams_it():
    paris = ToolCall(name="weather", arguments={"city": "Paris"})
    members = [
        ScriptedMember("a", [paris]),
        ScriptedMember("b", [ToolCall(name="weather", arguments={"city": "Paris"})]),
        ScriptedMember("c", ["I cannot check the weather."]),
    ]
    ens = Ensemble(members, MBR(similarity="lexical"))
    result = ens.run("Weather in Paris?", tools=[ToolSpec(name="weather")])
    assert result.tool_calls == [paris] and result.finish_reason == "tool_calls"
    deltas = list(ens.stream("Weather in Paris?", tools=[ToolSpec(name="weather")]))
    assert deltas[0].tool_call_chunks[0].id == paris.id and deltas[-1].final
