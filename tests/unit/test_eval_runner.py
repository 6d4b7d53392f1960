"""The eval loop: protocols per strategy, the resume cache (an interrupted run continues without redoing
work), settings checks, and the report folder."""

from __future__ import annotations

import json

import pytest

from ensemble_core.errors import ConfigError
from ensemble_core.eval.datasets import Dataset
from ensemble_core.eval.items import AnswerItem, ChoiceItem
from ensemble_core.eval.report import build_summary, markdown, write_report
from ensemble_core.eval.runner import Evaluation, iter_results
from ensemble_core.eval.specs import parse_specs
from ensemble_core.members.hf import HFMember
from ensemble_core.members.scripted import ScriptedMember

COLOURS = ["red", "green", "blue"]


def _choice_set(n: int = 6) -> Dataset:
    items = [
        ChoiceItem(id=str(i), question=f"Question: colour number {i}?", choices=COLOURS, gold=i % 3)
        for i in range(n)
    ]
    return Dataset(name="colours", path="memory", sha256="0" * 64, items=items)


def _letter_for_gold(request):
    """Answers the right letter for even items and 'A' otherwise."""
    number = int(request.messages[-1].content.split("number ")[1].split("?")[0])
    return "ABC"[number % 3] if number % 2 == 0 else "A"


@pytest.fixture()
def pair(tiny_model_dir):
    return [HFMember(tiny_model_dir, name="tiny"), HFMember(tiny_model_dir, name="tiny2")]


def test_loglik_targets_and_choice_ensemble(tmp_path, pair):
    evaluation = Evaluation(
        _choice_set(), pair, parse_specs("single:tiny,single:tiny2,choice-ensemble"), tmp_path
    )
    results = evaluation.run()
    assert {t.protocol for t in evaluation.targets} == {"loglik"}
    assert len(results) == 18
    by = {(r.strategy, r.id): r for r in results}
    # Same weights in both members: the uniform ensemble must agree with each of them.
    assert all(by[("choice-ensemble", str(i))].pred == by[("single:tiny", str(i))].pred for i in range(6))
    assert all(by[("choice-ensemble", str(i))].calls == 2 for i in range(6))


def test_routers_are_judged_by_the_loglik_answer_of_the_member_they_pick(tmp_path, pair):
    evaluation = Evaluation(
        _choice_set(), pair, parse_specs("single:tiny2,rule-router[default=tiny2]"), tmp_path
    )
    assert [t.protocol for t in evaluation.targets] == ["loglik", "routed"]
    results = evaluation.run()
    single = {r.id: r.pred for r in results if r.strategy == "single:tiny2"}
    routed = [r for r in results if r.protocol == "routed"]
    assert {r.chosen for r in routed} == {"tiny2"} and {r.id: r.pred for r in routed} == single


def test_scoring_workers_give_the_same_results(tmp_path, pair):
    one = Evaluation(_choice_set(8), pair, parse_specs("single:tiny,single:tiny2"), tmp_path / "one").run()
    two = Evaluation(
        _choice_set(8),
        pair,
        parse_specs("single:tiny,single:tiny2"),
        tmp_path / "two",
        workers=3,
        batch_choices=3,
    ).run()
    assert [(r.strategy, r.id, r.pred) for r in one] == [(r.strategy, r.id, r.pred) for r in two]
    assert len((tmp_path / "two" / "cache" / "scores.tiny.jsonl").read_text().splitlines()) == 8


def test_generate_protocol_adds_single_baselines_and_extracts_letters(tmp_path):
    members = [ScriptedMember("a", _letter_for_gold), ScriptedMember("b", ["C"])]
    evaluation = Evaluation(_choice_set(), members, parse_specs("vote[candidates=[a]]"), tmp_path)
    labels = [t.label for t in evaluation.targets]
    assert labels == ["vote[candidates=[a]]", "single:a (generate)", "single:b (generate)"]
    results = {(r.strategy, r.id): r for r in evaluation.run()}
    assert [results[("vote[candidates=[a]]", str(i))].correct for i in range(6)] == [
        True,
        False,
        True,
        True,
        True,
        False,
    ]
    assert results[("single:b (generate)", "2")].pred == 2 and results[("single:b (generate)", "2")].correct


def test_an_interrupted_run_continues_where_it_stopped(tmp_path):
    calls = []

    def flaky(request):
        calls.append(request)
        if len(calls) == 4:
            raise KeyboardInterrupt  # the user pressed Ctrl-C during the fourth item
        return "A"

    members = [ScriptedMember("a", flaky)]
    with pytest.raises(KeyboardInterrupt):
        Evaluation(_choice_set(), members, parse_specs("single:a"), tmp_path, mc_protocol="generate").run()
    cache = tmp_path / "cache" / "generate.single_a.jsonl"
    assert len(cache.read_text().splitlines()) == 3
    results = Evaluation(
        _choice_set(), members, parse_specs("single:a"), tmp_path, mc_protocol="generate"
    ).run()
    assert len(results) == 6 and len(calls) == 4 + 3  # items 0-2 came from the cache, 3-5 ran
    again = Evaluation(
        _choice_set(), members, parse_specs("single:a"), tmp_path, mc_protocol="generate"
    ).run()
    assert [r.model_dump() for r in again] == [r.model_dump() for r in results] and len(calls) == 7


def test_a_torn_cache_line_is_redone(tmp_path, pair):
    Evaluation(_choice_set(3), pair[:1], parse_specs("single:tiny"), tmp_path).run()
    cache = tmp_path / "cache" / "scores.tiny.jsonl"
    lines = cache.read_text().splitlines()
    cache.write_text("\n".join(lines[:2]) + "\n" + lines[2][:20])
    results = Evaluation(_choice_set(3), pair[:1], parse_specs("single:tiny"), tmp_path).run()
    assert [r.id for r in results] == ["0", "1", "2"]


def test_resuming_with_other_data_or_settings_is_refused(tmp_path):
    members = [ScriptedMember("a", ["A"])]
    Evaluation(_choice_set(), members, parse_specs("single:a"), tmp_path, mc_protocol="generate").run()
    other = _choice_set().model_copy(update={"sha256": "1" * 64})
    with pytest.raises(ConfigError, match="sha256"):
        Evaluation(other, members, parse_specs("single:a"), tmp_path, mc_protocol="generate").run()
    with pytest.raises(ConfigError, match="seed"):
        Evaluation(
            _choice_set(), members, parse_specs("single:a"), tmp_path, mc_protocol="generate", seed=1
        ).run()


def test_bad_strategy_params_fail_before_any_work(tmp_path):
    with pytest.raises(ConfigError, match="fallback"):
        Evaluation(_choice_set(), [ScriptedMember("a", ["A"])], parse_specs("fallback[order=[zz]]"), tmp_path)
    assert not (tmp_path / "run.json").exists()


def test_short_answer_sets_generate_and_skip_choice_ensemble(tmp_path):
    items = [
        AnswerItem(id="0", question="Capital of France?", answers=["Paris"]),
        AnswerItem(id="1", question="2+2?", answers=["4"], match="numeric"),
    ]
    data = Dataset(name="qa", path="memory", sha256="0" * 64, items=items)
    evaluation = Evaluation(
        data, [ScriptedMember("a", ["Paris.", "It is 5."])], parse_specs("single:a,choice-ensemble"), tmp_path
    )
    assert any("not applicable" in n for n in evaluation.notes)
    assert [r.correct for r in evaluation.run()] == [True, False]


def test_report_folder(tmp_path, pair):
    evaluation = Evaluation(
        _choice_set(), pair, parse_specs("single:tiny,single:tiny2,choice-ensemble"), tmp_path
    )
    results = evaluation.run()
    summary = build_summary(
        command="llm-ensemble eval --data colours",
        dataset=evaluation.dataset,
        settings=evaluation.settings,
        results=results,
        singles={"single:tiny", "single:tiny2"},
        scores=evaluation.scores,
        notes=["a note"],
    )
    report = write_report(summary, results, tmp_path)
    text = report.read_text()
    assert "`llm-ensemble eval --data colours`" in text and "0" * 64 in text and "seed 0" in text
    assert "| choice-ensemble | loglik |" in text and "oracle: any member right" in text
    assert "95% CI" in text and "McNemar" in text and "a note" in text
    for png in ("accuracy.png", "cost_quality.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(list(iter_results(tmp_path / "items.jsonl"))) == 18
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["oracle"]["accuracy"] >= max(s["accuracy"] for s in saved["strategies"] if s["single"])
    assert saved["cascade_curve"][0]["escalated"] == 0.0 and saved["cascade_curve"][-1]["escalated"] == 1.0
    assert markdown(summary) == text
