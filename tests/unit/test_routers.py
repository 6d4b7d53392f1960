"""Routers: rules, semantic similarity, perplexity and a learned quality predictor, with scripted members,
tiny models and a transparent keyword embedding (so the expected route is known)."""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence

import numpy as np
import pytest

from ensemble_core.ensemble import Ensemble
from ensemble_core.errors import AllMembersFailedError, CapabilityError, ConfigError
from ensemble_core.members.base import Capability
from ensemble_core.members.scripted import ScriptedMember
from ensemble_core.scoring.conversation import embed_conversation, query_turns, recency_weights
from ensemble_core.strategies import LearnedRouter, RuleRouter, SemanticRouter
from ensemble_core.strategies.learned_router import RouterRecord
from ensemble_core.types import ContinuationScore, Message, Request, ToolCall, merge_tool_call_chunks

TOPICS = {
    "math": {"times", "plus", "minus", "multiply", "sum", "math", "equation"},
    "poetry": {"poem", "rhyme", "verse", "haiku", "sonnet"},
    "code": {"python", "function", "bug", "compile", "code"},
}


def keyword_embed(texts: Sequence[str]) -> np.ndarray:
    """One dimension per topic (count of its words) plus a small constant one, so no text embeds to zero."""
    rows = []
    for text in texts:
        words = {w.strip("?.,!").lower() for w in text.split()}
        rows.append([len(words & vocab) for vocab in TOPICS.values()] + [0.1])
    return np.asarray(rows, dtype=np.float64)


def members(*names: str) -> list[ScriptedMember]:
    return [ScriptedMember(name, [f"{name} answers"]) for name in names]


def thread(*turns: str) -> list[Message]:
    """Alternating user / assistant turns ending with a user turn."""
    return [Message(role="user" if i % 2 == 0 else "assistant", content=t) for i, t in enumerate(turns)]


AGENT_THREAD = [
    Message(role="user", content="What is 6 times 7? Use the calculator."),
    Message(role="assistant", tool_calls=[ToolCall(id="c1", name="calc", arguments={"expr": "6*7"})]),
    Message(role="tool", tool_call_id="c1", content='{"result": 42}'),
]


# the conversation helper ------------------------------------------------------------------------------------
def test_query_turns_are_the_user_turns_even_when_an_agent_thread_ends_with_a_tool_result():
    assert query_turns(AGENT_THREAD) == ["What is 6 times 7? Use the calculator."]
    assert query_turns(thread("a", "b", "c", "d", "e"), max_turns=2) == ["c", "e"]
    assert query_turns([Message(role="system", content="be brief")]) == ["be brief"]


def test_recency_weights_favour_the_newest_turn_and_sum_to_one():
    weights = recency_weights(3, 0.5)
    assert weights.sum() == pytest.approx(1.0)
    assert weights[2] == pytest.approx(2 * weights[1]) and weights[1] == pytest.approx(2 * weights[0])
    assert recency_weights(3, 0.0).tolist() == [0.0, 0.0, 1.0]


def test_conversation_embedding_is_a_unit_vector_pulled_towards_earlier_turns():
    messages = thread("a poem please", "...", "and one more")
    vector = embed_conversation(messages, keyword_embed, decay=0.5, max_turns=4)
    assert np.linalg.norm(vector) == pytest.approx(1.0)
    assert vector[1] > 0.3  # the poetry dimension comes from the first turn
    assert embed_conversation(messages, keyword_embed, decay=0.0, max_turns=4)[1] == 0.0
    assert embed_conversation(messages, keyword_embed, decay=0.5, max_turns=1)[1] == 0.0


# RuleRouter
# ---------------------------------------------------------------------------------------------------
RULES = [
    {"member": "coder", "keywords": ["python", "C++"]},
    {"member": "tools", "has_tools": True},
    {"member": "mathematician", "pattern": r"\d+\s*[-+*/x]\s*\d+"},
    {"member": "big", "min_chars": 200},
]


def rule_ensemble(**kwargs):
    return Ensemble(
        members("coder", "tools", "mathematician", "big", "small"),
        "rule-router",
        rules=RULES,
        default="small",
        **kwargs,
    )


@pytest.mark.parametrize(
    ("prompt", "tools", "expected"),
    [
        ("How do I sort a list in Python?", None, "coder"),
        ("Is C++ faster than C?", None, "coder"),
        ("pythonic is not a keyword match", None, "small"),
        ("What is 12 * 7?", None, "mathematician"),
        ("Tell me a story. " * 20, None, "big"),
        ("Hello there", None, "small"),
        ("What's the weather?", [{"name": "weather", "description": "forecast"}], "tools"),
        ("Write python to get the weather", [{"name": "weather"}], "coder"),  # the first matching rule wins
    ],
)
def test_rule_router_sends_each_request_to_the_first_matching_rule_or_the_default(prompt, tools, expected):
    result = rule_ensemble().run(prompt, tools=tools)
    assert result.text == f"{expected} answers"
    assert result.trace.chosen == expected
    assert [c.member for c in result.trace.calls] == [expected]


def test_rule_router_trace_says_which_rule_matched_and_why():
    trace = rule_ensemble().run("What is 3 + 4?").trace
    assert trace.reason.startswith("rule 2 (pattern")
    assert trace.details["matched_rules"] == [2]
    assert rule_ensemble().run("hi").trace.reason == "no rule matched -> default 'small'"


def test_rule_conditions_combine_and_scope_can_cover_the_whole_thread():
    rules = [{"member": "coder", "keywords": ["python"], "max_chars": 40, "scope": "user_turns"}]
    ens = Ensemble(members("coder", "small"), RuleRouter(rules=rules, default="small"))
    assert ens.run(thread("I use python", "ok", "and loops?")).trace.chosen == "coder"
    assert ens.run(thread("I use python " + "x" * 40, "ok", "and loops?")).trace.chosen == "small"


def test_rule_router_passes_tool_calls_through_in_an_agent_thread():
    call = ToolCall(id="c2", name="calc", arguments={"expr": "7*8"})
    agent = ScriptedMember("mathematician", [call])
    ens = Ensemble(
        [agent, *members("small")],
        "rule-router",
        rules=[{"member": "mathematician", "keywords": ["times"]}],
        default="small",
    )
    result = ens.run(AGENT_THREAD, tools=[{"name": "calc"}])
    assert result.tool_calls == [call]
    assert result.finish_reason == "tool_calls"
    assert agent.calls[0].messages == AGENT_THREAD  # the member sees the whole thread, tool messages included


def test_a_rule_can_send_the_turn_after_the_tools_answered_to_another_member():
    rules = [{"member": "big", "has_tool_results": True}, {"member": "small", "has_tools": True}]
    ens = Ensemble(members("big", "small", "plain"), RuleRouter(rules=rules, default="plain"))
    calc = [{"name": "calc"}]
    assert ens.run(AGENT_THREAD, tools=calc).trace.chosen == "big"
    assert ens.run(AGENT_THREAD, tools=calc).trace.reason == "rule 0 (tool results in) -> 'big'"
    assert ens.run(AGENT_THREAD[:1], tools=calc).trace.chosen == "small"
    assert ens.run(AGENT_THREAD[:1]).trace.chosen == "plain"


def test_a_streamed_tool_call_passes_through_a_router_intact():
    call = ToolCall(id="c3", name="calc", arguments={"expr": "7*8"})
    ens = Ensemble(
        [ScriptedMember("mathematician", [call]), *members("small")],
        "rule-router",
        rules=[{"member": "mathematician", "has_tools": True}],
        default="small",
    )
    deltas = list(ens.stream(AGENT_THREAD, tools=[{"name": "calc"}]))
    assert merge_tool_call_chunks([c for d in deltas for c in d.tool_call_chunks]) == [call]
    assert deltas[-1].finish_reason == "tool_calls" and deltas[-1].trace.chosen == "mathematician"


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"member": "a"}, "has no condition"),
        ({"member": "a", "pattern": "(unclosed"}, "invalid regular expression"),
        ({"member": "a", "min_chars": 10, "max_chars": 5}, "min_chars 10 > max_chars 5"),
        ({"member": "a", "keywords": ["x"], "colour": "red"}, "unknown field"),
    ],
)
def test_bad_rules_are_config_errors_that_say_what_to_fix(rule, message):
    with pytest.raises(ConfigError, match=message):
        Ensemble(members("a"), "rule-router", rules=[rule], default="a")


def test_rules_naming_an_unknown_member_fail_at_construction_with_the_known_names():
    with pytest.raises(ConfigError, match=r"no member is named 'ghost'; the members are: a, b"):
        Ensemble(
            members("a", "b"), "rule-router", rules=[{"member": "ghost", "keywords": ["x"]}], default="a"
        )


# fallback and streaming (shared by every router) ------------------------------------------------------------
def test_a_failing_chosen_member_falls_back_to_the_next_best_and_the_trace_says_so():
    broken = ScriptedMember("coder", [RuntimeError("GPU on fire")])
    ens = Ensemble(
        [broken, *members("small")],
        "rule-router",
        rules=[{"member": "coder", "keywords": ["python"]}],
        default="small",
    )
    result = ens.run("python question")
    assert result.text == "small answers"
    assert [(c.member, c.ok) for c in result.trace.calls] == [("coder", False), ("small", True)]
    assert "GPU on fire" in result.trace.details["failed"]["coder"]
    assert "'coder' failed, so 'small' (next best) answered" in result.trace.reason


def test_a_timed_out_member_falls_back_too():
    slow = ScriptedMember("coder", ["late"], delay_s=5.0, timeout_s=0.05)
    ens = Ensemble(
        [slow, *members("small")],
        "rule-router",
        rules=[{"member": "coder", "keywords": ["python"]}],
        default="small",
    )
    result = ens.run("python question")
    assert result.text == "small answers"
    assert result.trace.calls[0].error == "timed out"


def test_when_every_member_fails_the_error_says_why_each_failed():
    ens = Ensemble(
        [ScriptedMember("a", [ValueError("bad a")]), ScriptedMember("b", [KeyError("bad b")])],
        "rule-router",
        rules=[{"member": "a", "keywords": ["x"]}],
        default="b",
    )
    with pytest.raises(AllMembersFailedError, match=r"a: ValueError: bad a; b: KeyError"):
        ens.run("x")


def test_streaming_yields_the_chosen_members_tokens_and_a_final_trace():
    ens = rule_ensemble()
    deltas = list(ens.stream("Python or not?"))
    assert "".join(d.text for d in deltas) == "coder answers"
    assert len([d for d in deltas if d.text]) == 2  # word by word, as the member streamed it
    final = deltas[-1]
    assert final.final and final.trace.chosen == "coder" and final.member == "coder"


def test_streaming_falls_back_before_the_first_token():
    broken = ScriptedMember("coder", [RuntimeError("down")])
    ens = Ensemble(
        [broken, *members("small")],
        "rule-router",
        rules=[{"member": "coder", "keywords": ["python"]}],
        default="small",
    )
    deltas = list(ens.stream("python?"))
    assert "".join(d.text for d in deltas) == "small answers"
    assert deltas[-1].trace.chosen == "small"
    assert "coder" in deltas[-1].trace.details["failed"]


# SemanticRouter
# -----------------------------------------------------------------------------------------------
SEMANTIC_ROUTES = [
    {
        "member": "mathematician",
        "description": "math: multiply, plus, minus",
        "examples": ["what is 3 times 4"],
    },
    {"member": "poet", "description": "writes a poem or a haiku"},
    {"member": "coder", "examples": ["fix this python bug", "write a function"]},
]


def semantic_ensemble(**params):
    router = SemanticRouter(routes=SEMANTIC_ROUTES, embed=keyword_embed, **params)
    return Ensemble(members("mathematician", "poet", "coder", "general"), router)


def test_semantic_router_routes_by_similarity_to_descriptions_and_examples():
    ens = semantic_ensemble()
    assert ens.run("What is 12 times 9?").trace.chosen == "mathematician"
    assert ens.run("A haiku about autumn").trace.chosen == "poet"
    result = ens.run("My python function has a bug")
    assert result.trace.chosen == "coder"
    similarity = result.trace.details["similarity"]
    assert next(iter(similarity)) == "coder" and similarity["coder"] > similarity["poet"]


def test_a_follow_up_stays_with_its_thread():
    ens = semantic_ensemble()
    follow_up = "and another one, please"
    assert ens.run(thread("What is 6 times 7?", "42", follow_up)).trace.chosen == "mathematician"
    assert ens.run(thread("Write a poem about the sea", "Waves...", follow_up)).trace.chosen == "poet"


def test_the_newest_turn_outweighs_older_ones():
    ens = semantic_ensemble()
    assert ens.run(thread("Write a poem", "Roses...", "Now fix my python bug")).trace.chosen == "coder"


def test_below_min_similarity_the_default_member_answers():
    ens = Ensemble(
        members("mathematician", "poet", "coder", "general"),
        SemanticRouter(routes=SEMANTIC_ROUTES, embed=keyword_embed, default="general", min_similarity=0.5),
    )
    result = ens.run("Where is Paris?")
    assert result.trace.chosen == "general"
    assert "< min_similarity 0.5" in result.trace.reason
    assert ens.run("3 times 4 plus 5").trace.chosen == "mathematician"


def test_route_embeddings_are_computed_once():
    seen: list[int] = []

    def counting_embed(texts):
        seen.append(len(texts))
        return keyword_embed(texts)

    ens = Ensemble(
        members("mathematician", "poet", "coder"),
        SemanticRouter(routes=SEMANTIC_ROUTES, embed=counting_embed),
    )
    ens.run("3 times 4")
    ens.run("a poem")
    assert seen == [1, 5, 1]  # query, all route texts once, query


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"routes": [{"member": "a"}]}, "needs a description or at least one example"),
        (
            {"routes": [{"member": "a", "description": "x"}], "min_similarity": 0.3},
            "needs a `default` member",
        ),
        ({"routes": []}, "at least 1 item"),
    ],
)
def test_bad_semantic_routes_are_config_errors(params, message):
    with pytest.raises(ConfigError, match=message):
        Ensemble(members("a"), "semantic-router", **params)


# PerplexityRouter
# ---------------------------------------------------------------------------------------------
class FixedScorer(ScriptedMember):
    """A scripted member that scores every text at a fixed log-probability per token (or raises)."""

    capabilities = frozenset({Capability.GENERATE, Capability.SCORE})

    def __init__(self, name: str, logprob_per_token: float | BaseException):
        super().__init__(name, [f"{name} answers"])
        self.logprob_per_token = logprob_per_token

    def score(self, pairs):
        if isinstance(self.logprob_per_token, BaseException):
            raise self.logprob_per_token
        n = len(pairs[0][1].split())
        return [
            ContinuationScore(sum_logprob=self.logprob_per_token * n, n_tokens=n, n_chars=len(pairs[0][1]))
        ]


def test_perplexity_router_picks_the_least_surprised_member_and_records_every_perplexity():
    scorers = [FixedScorer("a", -2.0), FixedScorer("b", -0.5), FixedScorer("c", -1.0)]
    result = Ensemble(scorers, "perplexity-router", per="token").run("hello world")
    assert result.text == "b answers"
    perplexity = result.trace.details["perplexity"]
    assert perplexity == pytest.approx({"a": math.exp(2.0), "b": math.exp(0.5), "c": math.exp(1.0)})
    assert result.trace.details["perplexity_per"] == "token"
    assert result.trace.details["ranking"] == ["b", "c", "a"]
    assert sorted(c.member for c in result.trace.calls if c.role == "perplexity") == ["a", "b", "c"]


def test_perplexity_is_per_character_by_default():
    prompt = FixedScorer("a", -2.0).format_prompt(Request(messages=[Message(role="user", content="hi")]))
    result = Ensemble([FixedScorer("a", -2.0)], "perplexity-router").run("hi")
    n_tokens = len(prompt.split())
    assert result.trace.details["perplexity"]["a"] == pytest.approx(math.exp(2.0 * n_tokens / len(prompt)))


def test_a_member_that_cannot_score_ranks_last_and_the_request_is_still_answered():
    ens = Ensemble(
        [FixedScorer("a", RuntimeError("no logprobs")), FixedScorer("b", -3.0)], "perplexity-router"
    )
    result = ens.run("hello")
    assert result.text == "b answers"
    assert result.trace.details["unscored"] == ["a"]
    assert result.trace.details["ranking"] == ["b", "a"]


def test_perplexity_router_needs_the_score_capability():
    with pytest.raises(
        CapabilityError, match=r"member 'plain' .* lacks the 'score' capability .*perplexity-router"
    ):
        Ensemble([FixedScorer("a", -1.0), *members("plain")], "perplexity-router")


def test_perplexity_router_can_be_limited_to_some_members():
    ens = Ensemble(
        [FixedScorer("a", -2.0), FixedScorer("b", -0.5), *members("plain")],
        "perplexity-router",
        members=["a"],
    )
    assert ens.run("hi").text == "a answers"


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory, tiny_member):
    from ensemble_core.members.hf import HFMember
    from tests.unit.tiny_models import tiny_llama

    other = HFMember(tiny_llama(tmp_path_factory.mktemp("tiny-llama-1"), seed=1), name="tiny1")
    return [tiny_member, other]


def test_perplexity_router_on_tiny_models_agrees_with_member_score(tiny_pair):
    ens = Ensemble(tiny_pair, "perplexity-router")
    request = ens.request("abc abc abc", max_tokens=3)
    expected = {}
    for member in tiny_pair:
        (score,) = member.score([("", member.format_prompt(request))])
        expected[member.name] = math.exp(-score.sum_logprob / score.n_chars)
    from ensemble_core.asyncio_bridge import run_sync

    result = run_sync(ens.arun_request(request))
    assert result.trace.details["perplexity"] == pytest.approx(expected, rel=1e-4)
    assert result.trace.chosen == min(expected, key=expected.__getitem__)
    assert result.trace.calls[-1].role == "answer" and result.trace.calls[-1].member == result.trace.chosen


# LearnedRouter
# ------------------------------------------------------------------------------------------------
def topic_embed(texts: Sequence[str]) -> np.ndarray:
    """'easy ...' and 'hard ...' queries in two directions, with a small deterministic per-text wobble."""
    rows = []
    for text in texts:
        wobble = (zlib.crc32(text.encode()) % 100) / 1000
        rows.append([1.0, wobble, 0.05] if "easy" in text else [wobble, 1.0, 0.05])
    return np.asarray(rows)


def synthetic_records(n: int, offset: int = 0, members=("cheap", "pricey")) -> list[RouterRecord]:
    """The cheap member answers easy questions right and hard ones wrong; the pricey one answers both
    right."""
    records = []
    for i in range(offset, offset + n):
        hard = i % 2 == 1
        quality = {"cheap": 0.0 if hard else 1.0, "pricey": 1.0, "mid": 1.0 if i % 4 == 1 else 0.0}
        cost = {"cheap": 1.0, "pricey": 10.0, "mid": 3.0}
        records.append(
            RouterRecord(
                conversation=f"{'hard' if hard else 'easy'} question {i}",
                quality={m: quality[m] for m in members},
                cost={m: cost[m] for m in members},
            )
        )
    return records


def fitted_router(**params) -> LearnedRouter:
    return LearnedRouter(embed=topic_embed, k=5, **params).fit(synthetic_records(40))


def test_learned_router_predicts_quality_from_similar_logged_requests():
    router = fitted_router()
    predicted = router.predict(["easy question 1000", "hard question 1001"])
    assert router.member_names == ["cheap", "pricey"]
    assert predicted[0, 0] > 0.8 and predicted[1, 0] < 0.2  # cheap: right on easy, wrong on hard
    assert np.all(predicted[:, 1] > 0.9)
    assert np.all((predicted >= 0) & (predicted <= 1))
    assert router.costs == {"cheap": 1.0, "pricey": 10.0}


def test_threshold_zero_takes_the_best_prediction_and_a_large_one_the_cheapest():
    router = fitted_router()
    ens = Ensemble(members("cheap", "pricey"), router)
    assert ens.run("easy question 7").trace.chosen == "pricey"  # shrinkage keeps cheap just under 1
    router.threshold = 1.0
    result = ens.run("hard question 9")
    assert result.trace.chosen == "cheap"
    assert "cheapest within threshold" in result.trace.reason
    assert set(result.trace.details["predicted_quality"]) == {"cheap", "pricey"}


def test_calibrate_for_a_share_of_expensive_calls_finds_the_known_split():
    router = fitted_router()
    dev = synthetic_records(20, offset=100)
    point = router.operating_point(dev, target=0.5)
    assert point.expensive_share == pytest.approx(0.5)
    assert point.quality == pytest.approx(1.0)  # easy -> cheap, hard -> pricey: nothing lost
    tuned = router.calibrate(dev, target=0.5)
    assert (
        tuned.threshold == point.thresholds[0] > 0 and router.threshold == 0.0
    )  # a copy; the original stays
    ens = Ensemble(members("cheap", "pricey"), tuned)
    assert ens.run("easy question 3").trace.chosen == "cheap"
    assert ens.run(thread("hard question 5", "hmm", "hard question 5, again")).trace.chosen == "pricey"


def test_calibrate_for_a_cost_budget_and_the_quality_cost_curve():
    router = fitted_router()
    dev = synthetic_records(20, offset=100)
    curve = router.curve(dev)
    assert curve[0].thresholds == [0.0] and curve[0].expensive_share == 1.0
    assert [p.cost for p in curve] == sorted((p.cost for p in curve), reverse=True)
    assert curve[-1].expensive_share == 0.0 and curve[-1].quality == pytest.approx(0.5)
    point = router.operating_point(dev, target=6.0, metric="cost")
    assert point.cost == max(p.cost for p in curve if p.cost <= 6.0)  # spends up to the budget
    assert point.quality == pytest.approx(1.0)
    half = router.operating_point(dev, target=5.5, metric="cost")
    assert half.cost == pytest.approx(5.5)  # half at 1, half at 10
    with pytest.raises(ConfigError, match=r"cannot reach cost <= 0.5 on these records \(the lowest is 1,"):
        router.calibrate(dev, target=0.5, metric="cost")


def test_learned_router_handles_any_number_of_members():
    names = ("cheap", "mid", "pricey")
    router = LearnedRouter(embed=topic_embed, k=5).fit(synthetic_records(40, members=names))
    dev = synthetic_records(20, offset=100, members=names)
    point = router.operating_point(dev, target=0.5)
    assert point.quality == pytest.approx(1.0)
    assert set(point.shares) == set(names)
    tuned = router.calibrate(dev, target=0.5)
    assert Ensemble(members(*names), tuned).run("easy question 1").trace.chosen == "cheap"


def test_save_and_load_round_trip_without_pickle(tmp_path):
    router = fitted_router().calibrate(synthetic_records(20, offset=100), target=0.5)
    folder = router.save(tmp_path / "router")
    assert sorted(p.name for p in folder.iterdir()) == ["embeddings.npy", "quality.npy", "router.json"]
    loaded = LearnedRouter.load(folder, embed=topic_embed)
    assert loaded.threshold == router.threshold and loaded.k == 5
    queries = ["easy question 500", "hard question 501"]
    np.testing.assert_allclose(loaded.predict(queries), router.predict(queries))
    from_config = Ensemble(members("cheap", "pricey"), "learned-router", path=str(folder), embed=topic_embed)
    assert from_config.run("easy question 8").trace.chosen == "cheap"
    assert LearnedRouter.load(folder, embed=topic_embed, threshold=0.0).threshold == 0.0


def test_learned_router_errors_say_what_to_do(tmp_path):
    with pytest.raises(ConfigError, match=r"not fitted: call fit\(records\)"):
        Ensemble(members("cheap", "pricey"), LearnedRouter(embed=topic_embed))
    with pytest.raises(ConfigError, match="no member is named 'pricey'"):
        Ensemble(members("cheap", "other"), fitted_router())
    with pytest.raises(ConfigError, match=r"record 1 names members \['cheap'\]"):
        LearnedRouter(embed=topic_embed).fit(
            [*synthetic_records(1), {"conversation": "x", "quality": {"cheap": 1}, "cost": {"cheap": 1}}]
        )
    with pytest.raises(ValueError, match="give both for each member"):
        RouterRecord(conversation="x", quality={"a": 1.0, "b": 0.0}, cost={"a": 1.0})
    with pytest.raises(
        ConfigError, match="fitted on 3-dimensional embeddings but the embedding function gives 4"
    ):
        LearnedRouter.load(fitted_router().save(tmp_path / "r"), embed=keyword_embed).predict(["x"])
    with pytest.raises(ConfigError, match="does not exist; pass a folder written by save"):
        LearnedRouter.load(tmp_path / "missing")
