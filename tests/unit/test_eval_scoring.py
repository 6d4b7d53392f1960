"""Choice scoring (the shared-prompt path equals `member.score`), normalisation, choice-ensemble weights,
specs."""

from __future__ import annotations

import pytest

from ensemble_core.errors import CapabilityError, ConfigError, UnknownStrategyError
from ensemble_core.eval.choice_ensemble import ChoiceEnsemble
from ensemble_core.eval.choice_scoring import ChoiceScores, score_items
from ensemble_core.eval.items import ChoiceItem
from ensemble_core.eval.specs import parse_specs
from ensemble_core.members.scripted import ScriptedMember

ITEMS = [
    ChoiceItem(
        id="0",
        question="Question: What is hot?",
        prompt="Question: What is hot?\nAnswer:",
        choices=["fire", "ice cold water", "snow"],
        gold=0,
    ),
    ChoiceItem(id="1", question="The cat", choices=["sat on the mat.", "ran"], gold=0),
    ChoiceItem(
        id="2",
        question="Which?",
        choices=["The dog", "The cat"],
        gold=1,
        contexts=["The dog", "The cat"],
        continuation="purred loudly.",
    ),
]


def test_shared_prompt_path_equals_member_score(tiny_member):
    shared = {item.id: scores for item, scores in score_items(tiny_member, ITEMS, batch_choices=4)}
    for item in ITEMS:
        expected = [s.sum_logprob for s in tiny_member.score([(p, c) for p, cs in item.groups() for c in cs])]
        assert shared[item.id].logprobs == pytest.approx(expected, abs=1e-4)
        assert shared[item.id].n_chars == [len(t) for t in item.scored_texts()]


def test_flat_and_shared_paths_agree(tiny_member):
    shared = [s for _, s in score_items(tiny_member, ITEMS)]
    flat = [s for _, s in score_items(tiny_member, ITEMS, shared_prompt=False)]
    for a, b in zip(shared, flat, strict=True):
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4)
        assert a.prediction("chars") == b.prediction("chars")
    assert all(s.prompt_logprob is not None and s.prompt_logprob < 0 for s in shared[:2])
    assert shared[2].prompt_logprob is None  # Winogrande-style items have no single prompt


def test_scoring_needs_the_score_capability():
    with pytest.raises(CapabilityError, match="score"):
        list(score_items(ScriptedMember("s", ["x"]), ITEMS))


def _scores(logprobs, chars, prompt_logprob=None, prompt_bytes=10) -> ChoiceScores:
    return ChoiceScores(
        logprobs=logprobs,
        n_chars=chars,
        n_bytes=chars,
        n_tokens=[1] * len(chars),
        prompt_logprob=prompt_logprob,
        prompt_bytes=prompt_bytes,
    )


def test_normalisation_changes_the_prediction():
    s = _scores([-4.0, -6.0], [2, 12])
    assert s.prediction("none") == 0
    assert s.prediction("chars") == 1
    assert s.normalised("chars") == [-2.0, -0.5]


def test_choice_ensemble_uniform_and_fixed_weights():
    a = _scores([-1.0, -3.0], [1, 1])
    b = _scores([-4.0, -1.0], [1, 1])
    pred, weights, combined = ChoiceEnsemble().combine({"a": a, "b": b}, "none")
    assert weights == {"a": 0.5, "b": 0.5} and combined == [-2.5, -2.0] and pred == 1
    pred, weights, _ = ChoiceEnsemble(weights={"a": 3, "b": 1}).combine({"a": a, "b": b}, "none")
    assert weights == {"a": 0.75, "b": 0.25} and pred == 0
    with pytest.raises(ConfigError, match="unknown members"):
        ChoiceEnsemble(weights={"zz": 1}).combine({"a": a}, "none")


def test_packllm_sim_trusts_the_member_that_finds_the_prompt_less_surprising():
    a = _scores([-1.0, -3.0], [1, 1], prompt_logprob=-5.0)  # 0.5 nats/byte: at ease with the prompt
    b = _scores([-4.0, -1.0], [1, 1], prompt_logprob=-15.0)  # 1.5 nats/byte
    pred, weights, _ = ChoiceEnsemble(weights="packllm-sim").combine({"a": a, "b": b}, "none")
    assert weights["a"] > 0.9 and pred == 0
    _, flat, _ = ChoiceEnsemble(weights="packllm-sim", temperature=100).combine({"a": a, "b": b}, "none")
    assert flat["a"] == pytest.approx(0.5, abs=0.01)


def test_specs_parse_members_and_bracketed_params():
    specs = parse_specs(
        "single:smollm2, choice-ensemble[weights=packllm-sim,temperature=0.5],fallback[order=[b, a]],"
        "choice-ensemble[weights={a: 0.2, b: 0.8}]"
    )
    assert [s.name for s in specs] == ["single", "choice-ensemble", "fallback", "choice-ensemble"]
    assert specs[3].params == {"weights": {"a": 0.2, "b": 0.8}}
    assert specs[0].params == {"member": "smollm2"}
    assert specs[1].params == {"weights": "packllm-sim", "temperature": 0.5}
    assert specs[2].params == {"order": ["b", "a"]}
    assert specs[1].slug.startswith("choice-ensemble_weights")


@pytest.mark.parametrize(
    ("text", "error", "message"),
    [
        ("nope", UnknownStrategyError, "choice-ensemble"),
        ("fallback:a", ConfigError, "only single"),
        ("single[member=a", ConfigError, "not closed"),
        ("fallback[order]", ConfigError, "key=value"),
        ("single:a,single:a", ConfigError, "more than once"),
        ("", ConfigError, "empty"),
    ],
)
def test_bad_specs_say_what_to_write(text, error, message):
    with pytest.raises(error, match=message):
        parse_specs(text)
