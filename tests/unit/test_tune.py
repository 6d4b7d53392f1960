"""Tuning: fitted on dev items only, judged on test items, and written as a config the engine builds."""

from __future__ import annotations

import json
import sys
import zlib

import numpy as np
import pytest

from ensemble_core.config import load_config
from ensemble_core.eval.choice_methods import ConditionalLogit, FittedCombination, fit_cross_validated
from ensemble_core.eval.choice_scoring import ChoiceScores
from ensemble_core.eval.datasets import load_dataset
from ensemble_core.eval.items import ChoiceItem
from ensemble_core.eval.splits import Split
from ensemble_core.eval.tune import choose, summarise, tune, write_config
from ensemble_core.eval.tune_report import markdown
from ensemble_core.eval.tuning import _contrastive_config, routed, tune_choices
from ensemble_core.members.scripted import ScriptedMember
from ensemble_core.strategies import build_strategy


def _noop(_description: str, _total: int):
    return lambda: None


def _embed(texts):
    """A cheap stand-in for the sentence embedding (routers are tested with the real one elsewhere)."""
    return np.array([[1.0, float(len(t) % 5), float(len(t) % 3)] for t in texts])


def test_the_conditional_logit_recovers_the_weights_that_made_the_choices():
    rng = np.random.default_rng(0)
    true = np.array([2.0, 0.5, 0.0])
    items, gold = [], []
    for _ in range(600):
        x = rng.normal(size=(int(rng.integers(2, 5)), 3))
        p = np.exp(x @ true)
        items.append(x)
        gold.append(int(rng.choice(len(x), p=p / p.sum())))
    fitted = fit_cross_validated(items, gold)
    recovered = np.asarray(fitted.weights) / np.asarray(fitted.scale)
    assert recovered == pytest.approx(true, abs=0.35)
    assert isinstance(fitted, ConditionalLogit) and fitted.l2 in (1e-3, 1e-2, 1e-1, 1.0, 10.0)


def _scores(logprobs: list[float], cpu: float) -> ChoiceScores:
    n = len(logprobs)
    return ChoiceScores(logprobs=logprobs, n_chars=[10] * n, n_bytes=[10] * n, n_tokens=[3] * n, cpu_s=cpu)


def test_fits_see_only_dev_items_and_every_method_is_judged_on_all_test_items(tmp_path):
    data = tmp_path / "mc.jsonl"
    rows = [{"question": f"q{i}?", "choices": ["yes", "no"], "gold": i % 2} for i in range(60)]
    data.write_text("\n".join(json.dumps(r) for r in rows))
    dataset = load_dataset(str(data), split=Split(part="both", dev_size=20, test_size=40))
    items = dataset.items
    dev_ids, test_ids = Split(part="both", dev_size=20, test_size=40).ids(items)
    rng = np.random.default_rng(1)
    # "good" is right 90% of the time at 1 CPU s, "weak" 60% at 0.1 s
    scores = {
        name: {
            it.id: _scores([0.0, -2.0] if (it.gold == 0) == (rng.random() < acc) else [-2.0, 0.0], cost)
            for it in items
        }
        for name, acc, cost in (("weak", 0.6, 0.1), ("good", 0.9, 1.0))
    }
    dev = [i for i in items if i.id in dev_ids]
    test = [i for i in items if i.id in test_ids]
    methods = tune_choices(dev, test, scores, ["weak", "good"], embed=_embed)
    assert all(len(m.test_correct) == 40 for m in methods)
    assert {m.label for m in methods} >= {
        "single:weak",
        "single:good",
        "stacked alone:weak",
        "stacked alone:good",
        "choice-ensemble (uniform)",
    }
    summary = summarise(
        dataset, Split(part="both", dev_size=20, test_size=40), ["weak", "good"], methods, "t", 0
    )
    ensembles = [r for r in summary.rows if r.family == "ensemble"]
    assert ensembles and all(r.versus_best_tuned_single is not None for r in ensembles)
    assert all(
        (r.versus_best_tuned_single is None) == (r.family not in ("ensemble", "cascade", "router"))
        for r in summary.rows
    )
    assert "vs best member, raw or stacked alone" in markdown(summary)
    # the fit cannot see the test items: scrambling them leaves every dev figure unchanged
    scrambled = {n: {**s, **{i.id: _scores([-1.0, -1.0], 9.0) for i in test}} for n, s in scores.items()}
    again = tune_choices(dev, test, scrambled, ["weak", "good"], embed=_embed)
    assert [(m.label.split(" @ ")[0], m.dev_accuracy) for m in methods if m.family != "cascade"] == [
        (m.label.split(" @ ")[0], m.dev_accuracy) for m in again if m.family != "cascade"
    ]
    cascade = next(m for m in methods if m.family == "cascade" and m.details["chosen"])
    assert cascade.members == ["weak", "good"] and 0.1 <= cascade.test_cost_mean <= 1.1


def _biased_scores(items, with_peer: bool) -> dict[str, dict[str, ChoiceScores]]:
    """ "amateur" shares "expert"'s bias towards some choices without its knowledge; "peer" knows less than
    the expert and has no bias."""
    rng = np.random.default_rng(3)
    scores: dict[str, dict[str, ChoiceScores]] = {"expert": {}, "amateur": {}, "peer": {}}
    for it in items:
        bias = rng.normal(scale=2.0, size=4)
        knows = np.eye(4)[it.gold] * 1.5
        scores["expert"][it.id] = _scores(list(bias + knows + rng.normal(scale=0.3, size=4)), 1.0)
        scores["amateur"][it.id] = _scores(list(bias + rng.normal(scale=0.3, size=4)), 0.2)
        scores["peer"][it.id] = _scores(list(knows + rng.normal(scale=1.0, size=4)), 0.5)
    return scores if with_peer else {m: scores[m] for m in ("expert", "amateur")}


def _split_items(tmp_path):
    data = tmp_path / "mc.jsonl"
    rows = [{"question": f"q{i}?", "choices": list("abcd"), "gold": i % 4} for i in range(200)]
    data.write_text("\n".join(json.dumps(r) for r in rows))
    split = Split(part="both", dev_size=100, test_size=100)
    items = load_dataset(str(data), split=split).items
    dev_ids, test_ids = split.ids(items)
    return [i for i in items if i.id in dev_ids], [i for i in items if i.id in test_ids]


def test_a_calibrated_fit_that_subtracts_a_member_is_not_offered_as_token_fusion(tmp_path):
    """The best log-linear fit subtracts the amateur (a negative weight); token fusion cannot run that, so
    it is reported as contrastive, and the calibrated row keeps positive weights only."""
    dev, test = _split_items(tmp_path)
    scores = _biased_scores(dev + test, with_peer=True)
    methods = tune_choices(dev, test, scores, ["expert", "amateur", "peer"], embed=_embed)
    contrastive = next(m for m in methods if m.label.startswith("choice-ensemble (contrastive"))
    assert "amateur" in contrastive.members
    assert contrastive.details["weights"]["amateur per-char"] < 0
    calibrated = next(m for m in methods if m.label.startswith("choice-ensemble (calibrated"))
    assert "amateur" not in calibrated.members
    assert calibrated.strategy is not None and calibrated.strategy["name"] == "token-fusion"
    assert all(w > 0 for w in calibrated.strategy["params"]["weights"].values())


def test_a_contrastive_fit_is_written_as_contrastive_decoding_that_ranks_choices_the_same(tmp_path):
    """The signed fit of expert and amateur becomes `contrastive` with the beta whose (1 + beta) expert -
    beta amateur ranks every test item's choices as the fit does."""
    dev, test = _split_items(tmp_path)
    scores = _biased_scores(dev + test, with_peer=False)
    methods = tune_choices(dev, test, scores, ["expert", "amateur"], embed=_embed)
    fit = next(m for m in methods if m.label.startswith("choice-ensemble (contrastive"))
    assert fit.strategy is not None and fit.strategy["name"] == "contrastive"
    params = fit.strategy["params"]
    assert params["expert"] == "expert" and params["members"] == ["amateur"] and params["beta"] > 0
    beta = params["beta"]
    for item, right in zip(test, fit.test_correct, strict=True):
        expert = np.asarray(scores["expert"][item.id].normalised("chars"))
        amateur = np.asarray(scores["amateur"][item.id].normalised("chars"))
        assert (int(np.argmax((1 + beta) * expert - beta * amateur)) == item.gold) == right
    assert fit.test_accuracy > next(m for m in methods if m.label == "single:expert").test_accuracy
    assert build_strategy(fit.strategy["name"], params).expert == "expert"


@pytest.mark.parametrize(
    ("weights", "expected"),
    [
        ([-1.0, 3.0], {"expert": "b", "beta": 0.5}),  # 3 log p_b - log p_a ranks as 1.5 log p_b - 0.5 log p_a
        ([-2.0, 1.0], None),  # more is subtracted than added: no beta ranks choices that way
        ([1.0, 3.0], None),  # nothing subtracted: that is token fusion, not contrast
    ],
)
def test_only_a_fit_with_one_expert_outweighing_its_amateurs_is_written_as_contrastive(weights, expected):
    fitted = FittedCombination(
        members=["a", "b"],
        kind="calibrated",
        logit=ConditionalLogit(weights=weights, scale=[1.0, 1.0], l2=0.1),
    )
    config = _contrastive_config(fitted)
    if expected is None:
        assert config is None
    else:
        assert config is not None and config["params"]["members"] == ["a"]
        assert {k: config["params"][k] for k in expected} == pytest.approx(expected)


def test_an_answer_set_is_tuned_from_records_and_the_chosen_config_builds(tmp_path):
    data = tmp_path / "qa.jsonl"
    rows = [{"question": f"What is {i}+0?", "answers": [str(i)]} for i in range(30)]
    data.write_text("\n".join(json.dumps(r) for r in rows))
    split = Split(part="both", dev_size=10, test_size=20)
    dataset = load_dataset(str(data), split=split)
    members = [
        ScriptedMember("cheap", lambda r: "0"),
        ScriptedMember("strong", lambda r: r.messages[-1].content.split()[2].removesuffix("+0?")),
    ]
    summary, methods = tune(dataset, members, split, tmp_path / "report", _noop, command="test", embed=_embed)
    best = next(r for r in summary.rows if r.label == "single:strong")
    assert best.test_accuracy == 1.0 and summary.best_member == "single:strong"
    assert any(r.label.startswith("vote") for r in summary.rows)
    row = choose(summary, budget=None, max_share=None)
    assert row.strategy is not None and row.dev_accuracy == max(
        r.dev_accuracy for r in summary.rows if r.strategy
    )
    members_config = load_config(
        {
            "members": [
                {"type": "openai", "name": n, "base_url": "http://127.0.0.1:9/v1", "model": n, "score": False}
                for n in ("cheap", "strong")
            ]
        }
    )
    path = write_config(row, members_config, summary, tmp_path / "tuned.yaml")
    text = path.read_text()
    assert text.startswith("# Tuned by: test") and "Measured on test: accuracy" in text
    assert load_config(path).build_strategy().name == row.strategy["name"]
    with pytest.raises(Exception, match="no tuned method fits a budget"):
        choose(summary, budget=-1.0, max_share=None)


def test_the_learned_routers_dev_figure_is_out_of_fold_not_in_sample():
    """Correctness that has nothing to do with the question: routed on its own training items, a router would
    look far better than either member (each item is its own nearest neighbour); out of fold it cannot."""
    rng = np.random.default_rng(1)

    def rows(n, offset):
        return [
            (
                f"question {offset + i}",
                {"a": bool(rng.random() < 0.5), "b": bool(rng.random() < 0.5)},
                {"a": 1.0, "b": 2.0},
            )
            for i in range(n)
        ]

    def distinct(texts):
        return np.array(
            [[1.0 if j == zlib.crc32(t.encode()) % 64 else 0.0 for j in range(64)] for t in texts]
        )

    dev, test = rows(200, 0), rows(200, 1000)
    best_member = max(np.mean([c[m] for _, c, _ in dev]) for m in ("a", "b"))
    [router, _] = routed(dev, test, ["a", "b"], embed=distinct)
    assert router.label == "learned-router"
    assert router.dev_accuracy < best_member + 0.08
    assert abs(router.dev_accuracy - np.mean(router.test_correct)) < 0.12


def test_in_cascades_and_routers_members_answer_in_the_form_chosen_on_dev():
    """Raw per-character scores always pick the long choice here, while the summed log-likelihood knows
    the answer: a cascade or a router over raw members would be no better than a coin."""
    rng = np.random.default_rng(2)
    items = [
        ChoiceItem(id=str(i), question="?", prompt="?", choices=["a", "b" * 10], gold=i % 2)
        for i in range(90)
    ]

    def scored(item, accuracy, cost):
        right = rng.random() < accuracy
        picked = item.gold if right else 1 - item.gold
        lps = [-2.0 - rng.random(), -2.0 - rng.random()]
        lps[1 - picked] -= 3.0
        return ChoiceScores(logprobs=lps, n_chars=[1, 10], n_bytes=[1, 10], n_tokens=[1, 4], cpu_s=cost)

    scores = {
        name: {it.id: scored(it, acc, cost) for it in items}
        for name, acc, cost in (("weak", 0.8, 0.1), ("good", 0.95, 1.0))
    }
    dev, test = items[:40], items[40:]
    methods = {m.label: m for m in tune_choices(dev, test, scores, ["weak", "good"], embed=_embed)}
    raw = max(methods[f"single:{m}"].test_accuracy for m in ("weak", "good"))
    alone = {m: methods[f"stacked alone:{m}"].test_correct for m in ("weak", "good")}
    cascades = [m for m in methods.values() if m.family == "cascade"]
    routers = [m for m in methods.values() if m.family == "router"]
    assert raw < 0.7 and cascades and routers
    for method in cascades + routers:
        assert all(
            c in (w, g) for c, w, g in zip(method.test_correct, alone["weak"], alone["good"], strict=True)
        )
    chosen = next(m for m in cascades if m.details["chosen"])
    assert chosen.details["forms"] == {"weak": "stacked", "good": "stacked"}  # chosen by dev folds
    assert chosen.test_accuracy > raw + 0.15


@pytest.mark.parametrize("command", ["tune", "eval"])
def test_a_missing_plotting_extra_is_said_before_any_scoring(command, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from ensemble_core.cli import app

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    folder = tmp_path / "report"
    where = {
        "tune": ["--report", str(folder), "--out", str(tmp_path / "t.yaml")],
        "eval": ["--out", str(folder)],
    }
    result = CliRunner().invoke(app, [command, "--data", "arc_easy", *where[command]])
    assert result.exit_code == 2, result.output
    assert "pip install 'llm-ensemble[eval]'" in " ".join(result.output.split())
    assert not folder.exists()  # nothing was loaded or scored
