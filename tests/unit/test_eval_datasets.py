"""Loaders: a user's own JSONL, the data folder lookup, and the first items of the real public files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ensemble_core.errors import ConfigError
from ensemble_core.eval.datasets import DATA_ENV, data_dir, load_dataset
from ensemble_core.eval.items import AnswerItem, ChoiceItem


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def test_user_jsonl_multiple_choice_with_letter_or_index(tmp_path):
    path = _write(
        tmp_path / "mine.jsonl",
        [
            {"question": "2+2?", "choices": ["3", "4"], "answer": "B"},
            {"id": "q2", "query": "Sky colour?", "choices": ["blue", "green", "red"], "gold": 0},
        ],
    )
    data = load_dataset(str(path))
    assert data.name == "mine" and len(data.sha256) == 64
    first, second = data.items
    assert isinstance(first, ChoiceItem) and first.gold == 1 and first.id == "0"
    assert second.id == "q2" and second.groups() == [("Sky colour?\nAnswer:", [" blue", " green", " red"])]


def test_user_jsonl_short_answer_and_limit(tmp_path):
    path = _write(tmp_path / "qa.jsonl", [{"prompt": f"Q{i}", "answers": ["x", "y"]} for i in range(5)])
    data = load_dataset(str(path), limit=2)
    assert [i.id for i in data.items] == ["0", "1"]
    assert isinstance(data.items[0], AnswerItem) and data.items[0].answers == ["x", "y"]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"choices": ["a", "b"], "gold": 0}, "'question'"),
        ({"question": "q", "choices": ["a", "b"], "gold": 2}, "only 2 choices"),
        ({"question": "q", "choices": ["a", "b"]}, "'gold'"),
        ({"question": "q"}, "'answer'"),
    ],
)
def test_bad_records_name_the_record_and_the_field(tmp_path, row, message):
    path = _write(tmp_path / "bad.jsonl", [{"question": "ok", "answer": "fine"}, row])
    with pytest.raises(ConfigError, match="record 2") as err:
        load_dataset(str(path))
    assert message in str(err.value)


def test_invalid_json_line_names_the_line(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text('{"question": "q", "answer": "a"}\n{not json\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"broken.jsonl:2"):
        load_dataset(str(path))


def test_unknown_name_lists_the_sets():
    with pytest.raises(ConfigError, match="arc_easy"):
        load_dataset("no_such_set_or_file")


def test_data_dir_prefers_explicit_then_env(tmp_path, monkeypatch):
    explicit, env = tmp_path / "a", tmp_path / "b"
    explicit.mkdir()
    env.mkdir()
    monkeypatch.setenv(DATA_ENV, str(env))
    assert data_dir(explicit) == explicit.resolve()
    assert data_dir() == env.resolve()


def test_missing_file_in_data_dir_is_named(tmp_path):
    with pytest.raises(ConfigError, match="missing .*arc_easy.jsonl"):
        load_dataset("arc_easy", data_dir_path=tmp_path)


# The real public files (skipped where the shared data folder is absent).
try:
    REAL = data_dir()
except ConfigError:
    REAL = None
needs_data = pytest.mark.skipif(REAL is None, reason="the shared data folder is not present")


@needs_data
def test_real_arc_easy_first_item():
    item = load_dataset("arc_easy", limit=1).items[0]
    assert item.choices[0] == "Sunlight is the source of energy for nearly all ecosystems." and item.gold == 0
    prompt, continuations = item.groups()[0]
    assert prompt.endswith("food webs?\nAnswer:") and continuations[0].startswith(" Sunlight")


@needs_data
def test_real_hellaswag_piqa_winogrande_first_items():
    hellaswag = load_dataset("hellaswag", limit=2).items
    assert hellaswag[0].gold == 3 and len(hellaswag[0].choices) == 4 and hellaswag[1].id == "1"
    piqa = load_dataset("piqa", limit=1).items[0]
    assert len(piqa.choices) == 2 and piqa.gold == 0
    wino = load_dataset("winogrande", limit=1).items[0]
    groups = wino.groups()
    assert len(groups) == 2 and groups[0][1] == groups[1][1] == [" always got the easier cases."]
    assert wino.gold == 1


@needs_data
def test_real_short_answer_sets():
    gsm = load_dataset("gsm8k", limit=1).items[0]
    assert gsm.answers == ["18"] and gsm.match == "numeric"
    trivia = load_dataset("triviaqa", limit=1).items[0]
    assert trivia.question.endswith("types of which vegetable?") and "Onion" in trivia.answers
    lambada = load_dataset("lambada", limit=1).items[0]
    assert lambada.answers == ["signs"] and lambada.match == "first-word"


@needs_data
def test_truthfulqa_true_answer_is_shuffled_deterministically():
    first = load_dataset("truthfulqa", limit=100, seed=0).items
    again = load_dataset("truthfulqa", limit=100, seed=0).items
    other = load_dataset("truthfulqa", limit=100, seed=1).items
    assert [i.choices for i in first] == [i.choices for i in again]
    assert [i.choices for i in first] != [i.choices for i in other]
    assert first[0].choices[first[0].gold] == "The watermelon seeds pass through your digestive system"
    assert len({i.gold for i in first}) > 3  # not always first


@needs_data
def test_mmlu_reads_all_subjects_with_stable_ids():
    items = load_dataset("mmlu", limit=120).items
    assert items[0].id == "abstract_algebra_test-0" and items[-1].id.startswith("anatomy_test-")
    assert all(len(i.choices) == 4 for i in items)
