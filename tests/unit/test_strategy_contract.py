"""The strategy contract: one `members` field for every strategy (earlier names still accepted), and a new
strategy is one module plus one registry line."""

from __future__ import annotations

import sys

import pytest

from ensemble_core import Ensemble
from ensemble_core.errors import ConfigError
from ensemble_core.members.scripted import ScriptedMember
from ensemble_core.strategies import registry
from ensemble_core.strategies.base import Strategy
from ensemble_core.strategies.registry import STRATEGIES, build_strategy, strategy_class


def members() -> list[ScriptedMember]:
    return [ScriptedMember("a", ["from a"]), ScriptedMember("b", ["from b"]), ScriptedMember("c", ["from c"])]


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_strategy_has_members_and_no_field_named_candidates_or_order(name):
    fields = strategy_class(name).model_fields
    assert "members" in fields
    assert not {"candidates", "order", "member"} & set(fields)


@pytest.mark.parametrize(
    ("name", "old", "value", "expected"),
    [
        ("fallback", "order", ["b", "a"], ["b", "a"]),
        ("cascade", "order", ["b", "a"], ["b", "a"]),
        ("vote", "candidates", ["a", "c"], ["a", "c"]),
        ("mbr", "candidates", ["a", "c"], ["a", "c"]),
        ("rank-and-fuse", "candidates", ["a", "c"], ["a", "c"]),
        ("perplexity-router", "candidates", ["c"], ["c"]),
        ("single", "member", "b", ["b"]),
    ],
)
def test_the_earlier_field_names_are_still_accepted(name, old, value, expected):
    assert build_strategy(name, {old: value}).members == expected
    assert strategy_class(name)(**{old: value}).members == expected
    with pytest.raises(ConfigError, match="not both"):
        build_strategy(name, {old: value, "members": expected})


def test_a_config_file_may_use_the_earlier_name(tmp_path):
    path = tmp_path / "ensemble.yaml"
    path.write_text(
        "members:\n"
        '  - {type: openai, name: x, base_url: "http://127.0.0.1:9/v1", model: m, score: false}\n'
        '  - {type: openai, name: y, base_url: "http://127.0.0.1:9/v1", model: m, score: false}\n'
        "strategy: {name: fallback, params: {order: [y, x]}}\n"
    )
    assert Ensemble.from_config(path).strategy.members == ["y", "x"]


def test_fallback_asks_the_members_in_the_order_named():
    result = Ensemble(members(), "fallback", members=["c", "a"]).run("?")
    assert result.text == "from c" and result.trace.chosen == "c"


def test_an_unknown_member_name_lists_the_members_there_are():
    with pytest.raises(
        ConfigError, match=r"fallback.members: no member is named 'zz'; the members are: a, b, c"
    ):
        Ensemble(members(), "fallback", members=["zz"])


THROWAWAY = '''
from typing import ClassVar

from pydantic import Field

from ensemble_core.strategies.base import Strategy


class LongestAnswer(Strategy):
    """Every member answers; the longest answer wins."""

    name: ClassVar[str] = "longest-answer"
    summary: ClassVar[str] = "the longest of the members' answers"
    bonus: int = Field(default=0, description="characters added to the first member's length")

    async def arun(self, ctx, request):
        team = self.participants(list(ctx.members.values()))
        answers, _ = await ctx.generate_all(team, [request], "candidate")
        best = max(answers, key=lambda g: len(g.text) + (self.bonus if g is answers[0] else 0))
        return ctx.result(best, reason="longest")
'''


def test_a_new_strategy_is_one_module_and_one_registry_line(tmp_path, monkeypatch):
    (tmp_path / "my_longest.py").write_text(THROWAWAY)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(registry.STRATEGIES, "longest-answer", "my_longest:LongestAnswer")
    try:
        team = [ScriptedMember("a", ["short"]), ScriptedMember("b", ["a longer answer"])]
        result = Ensemble(team, "longest-answer").run("?")
        assert result.text == "a longer answer" and [c.role for c in result.trace.calls] == ["candidate"] * 2
        assert Ensemble(team, "longest-answer", members=["a"]).run("?").text == "short"
        assert Ensemble(team, "longest-answer", bonus=20).run("?").text == "short"
        assert isinstance(build_strategy("longest-answer", {}), Strategy)
        from ensemble_core.strategies.reference import strategy_reference

        assert "## `longest-answer` (LongestAnswer)" in strategy_reference()
        with pytest.raises(ConfigError, match="longest-answer.*bonus"):
            build_strategy("longest-answer", {"bonus": "many"})
    finally:
        sys.modules.pop("my_longest", None)
