"""StepFusion: members propose reasoning steps; perplexity, a judge member or a verifier picks each one."""

from __future__ import annotations

import pytest

from ensemble_core import Ensemble
from ensemble_core.errors import AllMembersFailedError, CapabilityError, ConfigError
from ensemble_core.members.scripted import ScriptedMember
from ensemble_core.strategies import StepFusion
from ensemble_core.strategies.step_fusion import MATH_HINT
from ensemble_core.types import Request, ToolCall, ToolSpec
from tests.unit.fusion_doubles import continuing, prefers, scoring

QUESTION = "Tom has 3 apples and buys 5 more. How many apples does he have?"
RIGHT = "Tom starts with 3 apples.\nHe buys 5 more, so 3 + 5 = 8.\nThe answer is 8.\nExtra words."
WRONG = "Tom starts with 3 apples.\nHe buys 5 more, so 3 + 5 = 9.\nThe answer is 9."


def test_steps_are_lines_and_the_answer_marker_ends_the_solution():
    a = scoring("a", continuing(RIGHT))
    b = scoring("b", continuing(RIGHT))
    result = Ensemble([a, b], StepFusion()).run(QUESTION)
    assert result.text == "Tom starts with 3 apples.\nHe buys 5 more, so 3 + 5 = 8.\nThe answer is 8."
    assert result.finish_reason == "stop"
    rounds = result.trace.details["rounds"]
    assert [r["text"] for r in rounds] == result.text.split("\n")
    # each step continues the accepted ones, ending with the separator so the member writes a new line
    assert [r.prefill for r in a.calls] == [
        "",
        "Tom starts with 3 apples.\n",
        "\n".join(RIGHT.split("\n")[:2]) + "\n",
    ]


def test_perplexity_picks_the_step_members_find_least_surprising():
    a = scoring("a", continuing(WRONG), scorer=prefers("8"))
    b = scoring("b", continuing(RIGHT), scorer=prefers("8"))
    result = Ensemble([a, b], StepFusion()).run(QUESTION)
    assert result.text.endswith("The answer is 8.")
    second = result.trace.details["rounds"][1]
    assert second["candidates"] == ["He buys 5 more, so 3 + 5 = 9.", "He buys 5 more, so 3 + 5 = 8."]
    assert second["score_name"] == "perplexity" and second["winner"] == "b"
    assert second["scores"][1] < second["scores"][0]


def test_a_verifier_picks_and_sees_the_steps_so_far():
    seen: list[tuple[list[str], str]] = []

    def verifier(request: Request, steps: list[str], candidate: str) -> float:
        assert request.messages[-1].content == QUESTION
        seen.append((steps, candidate))
        return 1.0 if "8" in candidate else 0.0

    a = ScriptedMember("a", continuing(WRONG))
    b = ScriptedMember("b", continuing(RIGHT))
    result = Ensemble([a, b], StepFusion(scorer=verifier)).run(QUESTION)  # no score capability needed
    assert result.text.endswith("The answer is 8.")
    assert (["Tom starts with 3 apples."], "He buys 5 more, so 3 + 5 = 8.") in seen
    assert result.trace.details["rounds"][1]["scores"] == [0.0, 1.0]


async def test_an_async_verifier_works():
    async def verifier(request: Request, steps: list[str], candidate: str) -> float:
        return -len(candidate)

    a = ScriptedMember("a", continuing("A long first step here.\nThe answer is 1."))
    b = ScriptedMember("b", continuing("Short.\nThe answer is 2."))
    result = await Ensemble([a, b], StepFusion(scorer=verifier)).arun(QUESTION)
    assert result.text == "Short.\nThe answer is 2."


def test_a_member_as_judge_picks_by_its_probability_of_yes():
    def judge_logprob(prompt: str, continuation: str) -> float:
        step = prompt.split("BEGIN PROPOSED NEXT STEP")[1]
        correct = "= 9" not in step
        return -0.1 if (continuation.strip() == "Yes") == correct else -2.0

    judge = scoring("judge", ["unused"], scorer=judge_logprob)
    a = ScriptedMember("a", continuing(WRONG))
    b = ScriptedMember("b", continuing(RIGHT))
    strategy = StepFusion(scorer="judge", judge="judge", members=["a", "b"])
    result = Ensemble([a, b, judge], strategy).run(QUESTION)
    assert result.text.endswith("The answer is 8.")
    second = result.trace.details["rounds"][1]
    assert second["judge"] == "judge" and second["scores"][1] > 0.5 > second["scores"][0]
    assert not judge.calls  # the judge only scores


def test_a_failing_judge_keeps_the_first_proposal_and_says_so():
    def broken(prompt: str, continuation: str) -> float:
        raise RuntimeError("judge offline")

    judge = scoring("judge", ["unused"], scorer=broken)
    a = ScriptedMember("a", continuing(WRONG))
    b = ScriptedMember("b", continuing(RIGHT))
    result = Ensemble([a, b, judge], StepFusion(scorer="judge", judge="judge", members=["a", "b"])).run(
        QUESTION
    )
    assert result.text.endswith("The answer is 9.")
    assert "judge offline" in result.trace.details["rounds"][1]["judge_failed"]


def test_the_judge_and_scorers_are_checked_at_construction():
    with pytest.raises(ConfigError, match="no member is named 'nobody'"):
        Ensemble([scoring("a", ["x"])], StepFusion(scorer="judge", judge="nobody"))
    with pytest.raises(CapabilityError, match="'a'.*'score'"):
        Ensemble([ScriptedMember("a", ["x"])], StepFusion())
    with pytest.raises(ConfigError, match="scorer"):
        Ensemble([scoring("a", ["x"])], "step-fusion", scorer="majority")


def test_max_steps_and_max_tokens_cut_the_solution_off():
    endless = scoring("a", lambda request: f"Step {request.prefill.count(chr(10)) + 1} done.\n")
    capped = Ensemble([endless], StepFusion(max_steps=3)).run(QUESTION)
    assert capped.text == "Step 1 done.\nStep 2 done.\nStep 3 done."
    assert capped.finish_reason == "length"
    short = Ensemble([endless], StepFusion()).run(QUESTION, max_tokens=6)
    assert short.text == "Step 1 done.\nStep 2 done." and short.finish_reason == "length"


def test_the_hint_goes_into_the_system_message():
    a = scoring("a", continuing(RIGHT))
    Ensemble([a], StepFusion()).run(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Q?"}]
    )
    assert a.calls[0].messages[0].content == f"Be brief.\n\n{MATH_HINT}"
    b = scoring("b", continuing("def f():\n    return 1"))
    result = Ensemble([b], StepFusion(hint=None)).run("Write f.")
    assert b.calls[0].messages[0].role == "user"
    assert result.text == "def f():\n    return 1"  # code lines keep their indentation; EOS ends


def test_a_failing_member_is_dropped_and_all_failing_is_an_error():
    a = scoring("a", continuing(RIGHT))
    broken = scoring("broken", [TimeoutError()])
    result = Ensemble([a, broken], StepFusion()).run(QUESTION)
    assert result.text.endswith("The answer is 8.")
    assert all(r["failed"] == ["broken"] for r in result.trace.details["rounds"])
    with pytest.raises(AllMembersFailedError, match="broken"):
        Ensemble([broken], StepFusion()).run(QUESTION)


def test_a_proposed_tool_call_is_returned_intact():
    call = ToolCall(name="calculator", arguments={"expression": "3 + 5"})
    a = scoring("a", continuing(RIGHT))
    caller = scoring("caller", [call])
    result = Ensemble([a, caller], StepFusion()).run(QUESTION, tools=[ToolSpec(name="calculator")])
    assert result.tool_calls == [call] and result.finish_reason == "tool_calls"


async def test_stream_yields_each_step_and_joins_to_the_result():
    a = scoring("a", continuing(WRONG), scorer=prefers("8"))
    b = scoring("b", continuing(RIGHT), scorer=prefers("8"))
    ens = Ensemble([a, b], StepFusion())
    result = await ens.arun(QUESTION)
    deltas = [d async for d in ens.astream(QUESTION)]
    assert [d.text for d in deltas[:-1]] == [
        "Tom starts with 3 apples.",
        "\nHe buys 5 more, so 3 + 5 = 8.",
        "\nThe answer is 8.",
    ]
    assert "".join(d.text for d in deltas) == result.text
    assert deltas[-1].final and deltas[-1].trace.details["rounds"] == result.trace.details["rounds"]
