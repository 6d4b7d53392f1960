"""Loaders for the public evaluation sets in the shared data folder and for a user's own JSONL.

The data folder is `--data-dir`, else `$LLM_ENSEMBLE_DATA`, else `../shared/data` next to the project root
(then next to the working directory). Every load reports the data's sha256 so a report names exactly what it
measured."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import random
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from ensemble_core.errors import ConfigError
from ensemble_core.eval.items import AnswerItem, ChoiceItem, Item
from ensemble_core.eval.splits import Split

DATA_ENV = "LLM_ENSEMBLE_DATA"
_PROJECT_ROOT = Path(__file__).resolve().parents[2]


class Dataset(BaseModel):
    """Items of one set, where they came from, and the sha256 of the file(s) read."""

    model_config = ConfigDict(extra="forbid")

    name: str
    path: str
    sha256: str
    items: list[ChoiceItem | AnswerItem]
    split: str | None = None

    @property
    def kind(self) -> str:
        return self.items[0].kind if self.items else "choice"


def data_dir(explicit: str | Path | None = None) -> Path:
    """The folder holding the public sets; names what was tried when none exists."""
    candidates = [Path(explicit)] if explicit else []
    if os.environ.get(DATA_ENV):
        candidates.append(Path(os.environ[DATA_ENV]))
    candidates += [_PROJECT_ROOT.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"]
    for candidate in candidates:
        if candidate.expanduser().is_dir():
            return candidate.expanduser().resolve()
    tried = ", ".join(str(c) for c in candidates)
    raise ConfigError(f"no evaluation data folder found (tried {tried}): pass --data-dir or set {DATA_ENV}")


def sha256_of(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as err:
                raise ConfigError(
                    f"{path}:{number}: not valid JSON ({err.msg}); write one JSON object per line"
                ) from err


# Each public set: its file(s) under the data folder and how one record becomes an item.
def _query_choices(answer_cue: str) -> Callable[[int, dict[str, Any]], Item]:
    """llm-foundry's {query, choices, gold}: the choice is scored after query + answer cue."""

    def parse(i: int, row: dict[str, Any]) -> Item:
        query = row["query"]
        return ChoiceItem(
            id=str(i),
            question=query.strip(),
            prompt=query.rstrip() + answer_cue,
            choices=row["choices"],
            gold=row["gold"],
        )

    return parse


def _winogrande(i: int, row: dict[str, Any]) -> Item:
    continuation = row["continuation"]
    options = [f"{c} {continuation}" for c in row["context_options"]]
    question = "Which sentence makes more sense?\n" + "\n".join(f"- {o}" for o in options)
    return ChoiceItem(
        id=str(i),
        question=question,
        choices=options,
        gold=row["gold"],
        contexts=row["context_options"],
        continuation=continuation,
    )


def _hellaswag(i: int, row: dict[str, Any]) -> Item:
    ctx = row["ctx"].strip()
    return ChoiceItem(
        id=str(row.get("idx", i)), question=ctx, prompt=ctx, choices=row["endings"], gold=int(row["label"])
    )


def _lambada(i: int, row: dict[str, Any]) -> Item:
    return AnswerItem(
        id=str(i),
        question="Write the next word of this text.\n\n" + row["context"],
        answers=[row["continuation"].strip()],
        match="first-word",
    )


_TRIVIA_QUESTION = re.compile(r"^\s*Question:\s*(.*?)\s*(?:\n\s*Answer:\s*)?$", re.DOTALL)


def _triviaqa(i: int, row: dict[str, Any]) -> Item:
    found = _TRIVIA_QUESTION.match(row["context"])
    question = found.group(1) if found else row["context"]
    return AnswerItem(
        id=str(i), question=question, answers=[row["answer"], *row.get("aliases", [])], match="exact"
    )


def _gsm8k(i: int, row: dict[str, Any]) -> Item:
    final = row["answer"].rsplit("####", 1)[-1].strip().replace(",", "")
    return AnswerItem(id=str(i), question=row["question"], answers=[final], match="numeric")


class _Spec(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)
    files: list[str]
    parse: Callable[[int, dict[str, Any]], Item] | None = None


_SETS: dict[str, _Spec] = {
    "arc_easy": _Spec(files=["arc_easy/arc_easy.jsonl"], parse=_query_choices("\nAnswer:")),
    "arc_challenge": _Spec(files=["arc_challenge/arc_challenge.jsonl"], parse=_query_choices("\nAnswer:")),
    "piqa": _Spec(files=["piqa/piqa.jsonl"], parse=_query_choices("\nAnswer:")),
    "openbookqa": _Spec(files=["openbookqa/openbook_qa.jsonl"], parse=_query_choices("")),
    "copa": _Spec(files=["copa/copa.jsonl"], parse=_query_choices("")),
    "boolq": _Spec(files=["boolq/boolq.jsonl"], parse=_query_choices("\nAnswer:")),
    "winogrande": _Spec(files=["winogrande/winogrande.jsonl"], parse=_winogrande),
    "hellaswag": _Spec(files=["hellaswag/hellaswag_val_full.jsonl"], parse=_hellaswag),
    "lambada": _Spec(files=["lambada/lambada_openai.jsonl"], parse=_lambada),
    "triviaqa": _Spec(files=["triviaqa/triviaqa_sm_sub.jsonl"], parse=_triviaqa),
    "gsm8k": _Spec(files=["gsm8k/test.jsonl"], parse=_gsm8k),
    "truthfulqa": _Spec(files=["truthfulqa/mc_task.json"]),
    "mmlu": _Spec(files=["mmlu/test"]),
}


def dataset_names() -> list[str]:
    return sorted(_SETS)


def load_dataset(
    name_or_path: str,
    *,
    data_dir_path: str | Path | None = None,
    limit: int | None = None,
    seed: int = 0,
    split: Split | None = None,
) -> Dataset:
    """A public set by name (see `dataset_names()`) or a user's JSONL file by path: the items of `split`
    (all items without one), then the first `limit` of them.

    `seed` fixes the deterministic choice shuffle of TruthfulQA MC1 (whose true answer is always listed
    first).
    """
    if split is None:
        return _load(name_or_path, data_dir_path, limit, seed)
    whole = _load(name_or_path, data_dir_path, None, seed)
    items = split.select(whole.items)[:limit]
    return whole.model_copy(update={"items": items, "split": split.describe(len(whole.items))})


def _load(name_or_path: str, data_dir_path: str | Path | None, limit: int | None, seed: int) -> Dataset:
    if name_or_path in _SETS:
        root = data_dir(data_dir_path)
        spec = _SETS[name_or_path]
        paths = [root / f for f in spec.files]
        missing = [str(p) for p in paths if not p.exists()]
        if missing:
            raise ConfigError(
                f"data set {name_or_path!r}: missing {', '.join(missing)} (is the data folder right?)"
            )
        if name_or_path == "mmlu":
            files = sorted(paths[0].glob("*.csv"))
            items = _mmlu(files, limit)
            return Dataset(name="mmlu", path=str(paths[0]), sha256=sha256_of(files), items=items)
        if name_or_path == "truthfulqa":
            items = _truthfulqa(paths[0], seed)[:limit]
        else:
            assert spec.parse is not None
            items = _parse_rows(paths[0], spec.parse, limit)
        return Dataset(name=name_or_path, path=str(paths[0]), sha256=sha256_of(paths), items=items)
    path = Path(name_or_path).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"--data {name_or_path!r} is neither a known set ({', '.join(dataset_names())}) nor a JSONL file"
        )
    return Dataset(
        name=path.stem,
        path=str(path.resolve()),
        sha256=sha256_of([path]),
        items=_parse_rows(path, _user_item, limit),
    )


def _parse_rows(path: Path, parse: Callable[[int, dict[str, Any]], Item], limit: int | None) -> list[Item]:
    items: list[Item] = []
    for i, row in enumerate(_jsonl(path)):
        if limit is not None and len(items) >= limit:
            break
        try:
            items.append(parse(i, row))
        except (KeyError, TypeError, ValueError, ValidationError) as err:
            raise ConfigError(f"{path}: record {i + 1}: {_describe(err)}") from err
    return items


def _describe(err: Exception) -> str:
    if isinstance(err, KeyError):
        return f"missing field {err.args[0]!r}"
    return str(err).replace("\n", "; ")


def _mmlu(files: list[Path], limit: int | None) -> list[Item]:
    items: list[Item] = []
    for path in files:
        subject = path.stem.removesuffix("_test").replace("_", " ")
        with path.open(encoding="utf-8", newline="") as handle:
            for row_number, row in enumerate(csv.DictReader(handle)):
                if limit is not None and len(items) >= limit:
                    return items
                choices = [row[f"choice{k}"] for k in range(4)]
                question = (
                    "The following is a multiple choice question about "
                    f"{subject}.\n\n{row['question'].strip()}\n"
                    + "\n".join(f"{'ABCD'[k]}. {c}" for k, c in enumerate(choices))
                )
                items.append(
                    ChoiceItem(
                        id=f"{path.stem}-{row_number}",
                        question=question,
                        prompt=question + "\nAnswer:",
                        choices=choices,
                        gold=int(row["answer"]),
                    )
                )
    return items


def _truthfulqa(path: Path, seed: int) -> list[Item]:
    """MC1: one true answer, listed first in the file; shuffled per item with a seeded RNG so position says
    nothing."""
    rows = json.loads(path.read_text(encoding="utf-8"))
    items: list[Item] = []
    for i, row in enumerate(rows):
        targets = row["mc1_targets"]
        order = list(targets)
        random.Random(f"{seed}:{i}").shuffle(order)
        question = "Question: " + row["question"].strip()
        gold = next(k for k, text in enumerate(order) if targets[text] == 1)
        items.append(
            ChoiceItem(id=str(i), question=question, prompt=question + "\nAnswer:", choices=order, gold=gold)
        )
    return items


_LETTERS = "ABCDEFGHIJ"


def _user_item(i: int, row: dict[str, Any]) -> Item:
    """A user's record: {question|query|prompt, choices, gold|answer (index or letter)} is multiple choice;
    {question|query|prompt, answer|answers} is short answer (matched exactly after normalisation)."""
    question = next((row[k] for k in ("question", "query", "prompt") if k in row), None)
    if question is None:
        raise ValueError("a record needs 'question' (or 'query' / 'prompt')")
    item_id = str(row.get("id", i))
    if "choices" in row:
        gold = row.get("gold", row.get("answer"))
        if isinstance(gold, str) and gold.strip().upper() in _LETTERS[: len(row["choices"])]:
            gold = _LETTERS.index(gold.strip().upper())
        if not isinstance(gold, int):
            raise ValueError(
                "a multiple-choice record needs 'gold' (0-based index) or 'answer' (index or letter)"
            )
        return ChoiceItem(
            id=item_id,
            question=str(question).strip(),
            prompt=str(question).rstrip() + "\nAnswer:",
            choices=row["choices"],
            gold=gold,
        )
    answers = row.get("answers", row.get("answer"))
    if answers is None:
        raise ValueError(
            "a record needs 'choices' + 'gold' (multiple choice) or 'answer' / 'answers' (short answer)"
        )
    answers = [answers] if isinstance(answers, (str, int, float)) else answers
    return AnswerItem(
        id=item_id, question=str(question), answers=[str(a) for a in answers], match=row.get("match", "exact")
    )
