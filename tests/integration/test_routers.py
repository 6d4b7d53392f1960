"""Routers on the real packaged models: PerplexityRouter on the small pair (SmolLM2 and Gemma 3), and the
semantic and learned routers on the packaged all-MiniLM-L6-v2 embedding."""

from __future__ import annotations

import math

import pytest

from ensemble_core.asyncio_bridge import run_sync
from ensemble_core.ensemble import Ensemble
from ensemble_core.members.scripted import ScriptedMember
from ensemble_core.scoring.embeddings import default_embed
from ensemble_core.strategies import LearnedRouter, PerplexityRouter, SemanticRouter
from ensemble_core.strategies.learned_router import RouterRecord
from ensemble_core.types import Message, ToolCall

pytestmark = pytest.mark.integration

AGENT_THREAD = [
    Message(role="system", content="You are a helpful assistant with a calculator."),
    Message(role="user", content="What is 6 times 7?"),
    Message(role="assistant", tool_calls=[ToolCall(id="c1", name="calc", arguments={"expr": "6*7"})]),
    Message(role="tool", tool_call_id="c1", content='{"result": 42}'),
]
CALC = {"name": "calc", "description": "evaluate an arithmetic expression", "parameters": {"type": "object"}}


def direct_perplexities(members, request, per: str) -> dict[str, float]:
    """Each member's perplexity of its own formatted prompt, from `member.score` directly."""
    out = {}
    for member in members:
        (score,) = member.score([("", member.format_prompt(request))])
        units = score.n_chars if per == "char" else score.n_tokens
        out[member.name] = math.exp(-score.sum_logprob / units)
    return out


@pytest.mark.parametrize("per", ["char", "token"])
def test_perplexity_router_picks_the_member_least_surprised_by_the_prompt(small_pair, per):
    ens = Ensemble(small_pair, PerplexityRouter(per=per))
    request = ens.request("What is the capital of France?", max_tokens=8)
    expected = direct_perplexities(small_pair, request, per)
    result = run_sync(ens.arun_request(request))
    assert result.trace.details["perplexity"] == pytest.approx(expected, rel=1e-3)
    assert result.trace.chosen == min(expected, key=expected.__getitem__)
    answer = [c for c in result.trace.calls if c.role == "answer"]
    assert [c.member for c in answer] == [result.trace.chosen] and answer[0].ok
    assert result.text.strip() or result.tool_calls


def test_perplexity_router_streams_the_chosen_members_tokens_in_an_agent_thread(small_pair):
    ens = Ensemble(small_pair, "perplexity-router")
    deltas = list(ens.stream(AGENT_THREAD, tools=[CALC], max_tokens=12))
    final = deltas[-1]
    assert final.final and final.trace.chosen in {"smollm2", "gemma3"}
    assert set(final.trace.details["perplexity"]) == {
        "smollm2",
        "gemma3",
    }  # both formats render tool messages
    answer = next(c for c in final.trace.calls if c.role == "answer")
    assert answer.member == final.trace.chosen
    assert "".join(d.text for d in deltas) == answer.text


# SemanticRouter on the packaged MiniLM ----------------------------------------------------------------------
ROUTES = [
    {
        "member": "math",
        "description": "arithmetic and mathematics: multiplication, addition, equations, numbers",
        "examples": ["What is 12 times 9?", "Solve 2x + 3 = 7", "What is the square root of 144?"],
    },
    {
        "member": "poet",
        "description": "creative writing: poems, haiku, song lyrics and stories",
        "examples": ["Write a poem about the sea", "Compose a haiku about autumn"],
    },
    {
        "member": "geo",
        "description": "geography: countries, capitals, rivers and mountains",
        "examples": ["What is the capital of Peru?", "Which river flows through Cairo?"],
    },
]


@pytest.fixture(scope="module")
def semantic_ensemble():
    members = [ScriptedMember(name, [f"{name} answers"]) for name in ("math", "poet", "geo")]
    return Ensemble(members, SemanticRouter(routes=ROUTES))


def test_semantic_router_routes_a_math_question_and_its_follow_up_to_the_math_member(semantic_ensemble):
    first = semantic_ensemble.run("What is 6 times 7?")
    assert first.trace.chosen == "math"
    follow_up = [
        Message(role="user", content="What is 6 times 7?"),
        Message(role="assistant", content="42"),
        Message(role="user", content="and what about 7 times 8?"),
    ]
    assert semantic_ensemble.run(follow_up).trace.chosen == "math"


def test_semantic_router_keeps_a_vague_follow_up_with_its_thread(semantic_ensemble):
    vague = "Can you do another one like that?"
    poem = [
        Message(role="user", content="Write a short poem about the ocean"),
        Message(role="assistant", content="Waves roll in..."),
        Message(role="user", content=vague),
    ]
    geo = [
        Message(role="user", content="What is the capital of Japan?"),
        Message(role="assistant", content="Tokyo."),
        Message(role="user", content=vague),
    ]
    assert semantic_ensemble.run(poem).trace.chosen == "poet"
    assert semantic_ensemble.run(geo).trace.chosen == "geo"
    assert semantic_ensemble.run("Which mountain range is Everest in?").trace.chosen == "geo"


# LearnedRouter on the packaged MiniLM -----------------------------------------------------------------------
MATH = [
    "What is 17 times 23?",
    "Compute 45 plus 98.",
    "What is 12 squared?",
    "Divide 144 by 12.",
    "What is 7 times 8?",
    "Subtract 39 from 100.",
    "What is 3 to the power of 4?",
    "Add 250 and 175.",
]
GEO = [
    "What is the capital of Italy?",
    "Which ocean is the largest?",
    "Where is Mount Kilimanjaro?",
    "What river runs through Paris?",
    "What is the capital of Canada?",
    "Which desert covers most of Mongolia?",
    "Which country has the most islands?",
    "What is the longest river in Africa?",
]


def test_learned_router_learns_which_member_is_good_at_what_from_real_embeddings(tmp_path):
    """'cheap' knows geography but not arithmetic; 'pricey' knows both and costs ten times more."""
    records = [
        RouterRecord(
            conversation=q,
            quality={"cheap": float(q in GEO), "pricey": 1.0},
            cost={"cheap": 1.0, "pricey": 10.0},
        )
        for q in MATH + GEO
    ]
    router = LearnedRouter(embed=default_embed, k=4).fit(records)
    point = router.operating_point(records, target=0.5)
    assert point.quality == pytest.approx(1.0) and point.expensive_share == pytest.approx(0.5)
    router = router.calibrate(records, target=0.5)
    members = [ScriptedMember(name, [f"{name} answers"]) for name in ("cheap", "pricey")]
    ens = Ensemble(members, LearnedRouter.load(router.save(tmp_path / "router")))
    assert ens.run("What is 9 times 6?").trace.chosen == "pricey"
    assert ens.run("What is the capital of Spain?").trace.chosen == "cheap"
