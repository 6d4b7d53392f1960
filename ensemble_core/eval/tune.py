"""`llm-ensemble tune`: fit every tunable method on the dev items of a fixed split, judge each once on the
test items, report them all (accuracy with Wilson intervals, CPU seconds per item, paired comparison with the
best member, a cost–accuracy plot with the frontier marked), and write the config of the best method under the
budget (chosen by its dev figures) with its measured test accuracy and cost in the file's comments."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from ensemble_core.config import EnsembleConfig
from ensemble_core.errors import ConfigError
from ensemble_core.eval.answer_records import record_answers
from ensemble_core.eval.choice_scoring import ChoiceScores, score_items
from ensemble_core.eval.datasets import Dataset, load_dataset
from ensemble_core.eval.items import AnswerItem, ChoiceItem
from ensemble_core.eval.metrics import PairedComparison, compare, wilson_interval
from ensemble_core.eval.runner import ResultCache
from ensemble_core.eval.splits import Split
from ensemble_core.eval.tuning import TunedMethod, tune_answers, tune_choices
from ensemble_core.members.base import Member
from ensemble_core.scoring.embeddings import EmbedFn

ProgressFactory = Callable[[str, int], Callable[[], None]]


class TuneRow(BaseModel):
    """One method in the report: dev figures (what selection saw) and test figures (what is reported)."""

    model_config = ConfigDict(extra="forbid")

    label: str
    family: str
    members: list[str]
    dev_accuracy: float
    dev_cpu_s: float
    test_accuracy: float
    ci_low: float
    ci_high: float
    test_cpu_s: float
    on_frontier: bool = False
    versus_best_member: PairedComparison | None = None
    versus_best_tuned_single: PairedComparison | None = Field(
        default=None,
        description="ensembles, cascades, routers: against the best member, raw or stacked alone",
    )
    strategy: dict[str, Any] | None = None
    details: dict[str, Any] = Field(default_factory=dict)


class TuneSummary(BaseModel):
    model_config = ConfigDict(extra="forbid")

    command: str
    created: str
    dataset: str
    sha256: str
    split: str
    members: list[str]
    best_member: str
    rows: list[TuneRow]
    curves: dict[str, list[tuple[float, float]]] = Field(
        default_factory=dict, description="cascade -> (test CPU s, test accuracy) along its dev frontier"
    )
    chosen: str | None = None
    budget: str | None = None


def collect(
    dataset: Dataset,
    members: Sequence[Member],
    out: Path,
    progress: ProgressFactory,
    seed: int = 0,
    verified: Sequence[str] | None = None,
) -> tuple[dict[str, dict[str, ChoiceScores]], dict[str, Any]]:
    """The members' choice scores (multiple-choice sets) or answer records (short-answer sets) for every
    item of the split, from the cache in `out` or made now (members one after another)."""
    cache = ResultCache(out)
    if dataset.kind == "choice":
        items = [i for i in dataset.items if isinstance(i, ChoiceItem)]
        scores: dict[str, dict[str, ChoiceScores]] = {}
        for member in members:
            done = cached_scores(cache, member.name)
            todo = [i for i in items if i.id not in done]
            step = progress(f"scoring with {member.name}", len(items))
            for _ in range(len(items) - len(todo)):
                step()
            for item, scored in score_items(member, todo, with_prompt=False):
                cache.append(f"scores.{member.name}", item.id, scored.model_dump())
                done[item.id] = scored
                step()
            scores[member.name] = done
        return scores, {}
    answer_items = [i for i in dataset.items if isinstance(i, AnswerItem)]
    step = progress("answering and verifying", len(answer_items))
    return {}, dict(record_answers(answer_items, members, out, seed=seed, verified=verified, step=step))


def cached_scores(cache: ResultCache, member: str) -> dict[str, ChoiceScores]:
    """A member's choice scores that `collect` cached, by item id."""
    return {k: ChoiceScores.model_validate(v) for k, v in cache.load(f"scores.{member}").items()}


def tune(
    dataset: Dataset,
    members: Sequence[Member],
    split: Split,
    out: Path,
    progress: ProgressFactory,
    *,
    command: str,
    seed: int = 0,
    verified: Sequence[str] | None = None,
    embed: EmbedFn | None = None,
) -> tuple[TuneSummary, list[TunedMethod]]:
    """Collect, fit on dev, judge on test; the summary and every method."""
    scores, records = collect(dataset, members, out, progress, seed, verified)
    dev_ids, test_ids = split.ids(dataset.items)
    names = [m.name for m in members]
    if dataset.kind == "choice":
        items = [i for i in dataset.items if isinstance(i, ChoiceItem)]
        dev = [i for i in items if i.id in dev_ids]
        test = [i for i in items if i.id in test_ids]
        methods = tune_choices(dev, test, scores, names, seed=seed, embed=embed)
    else:
        order = [i.id for i in dataset.items]
        questions = {i.id: i.question for i in dataset.items}
        methods = tune_answers(
            [i for i in order if i in dev_ids],
            [i for i in order if i in test_ids],
            records,
            names,
            questions,
            embed,
        )
    return summarise(dataset, split, names, methods, command, seed), methods


def summarise(
    dataset: Dataset,
    split: Split,
    members: list[str],
    methods: Sequence[TunedMethod],
    command: str,
    seed: int,
) -> TuneSummary:
    singles = [m for m in methods if m.family == "single"]
    best = max(singles, key=lambda m: m.test_accuracy)
    either = max(
        (m for m in methods if m.family in ("single", "tuned-single")), key=lambda m: m.test_accuracy
    )
    shown = [m for m in methods if m.family != "cascade" or m.details.get("chosen")]
    frontier = _frontier(shown)
    rows = []
    for m in shown:
        low, high = wilson_interval(sum(m.test_correct), len(m.test_correct))
        versus = (
            None if m is best else compare(m.label, m.test_correct, best.label, best.test_correct, seed=seed)
        )
        rows.append(
            TuneRow(
                label=m.label,
                family=m.family,
                members=m.members,
                dev_accuracy=m.dev_accuracy,
                dev_cpu_s=m.dev_cost,
                test_accuracy=m.test_accuracy,
                ci_low=low,
                ci_high=high,
                test_cpu_s=m.test_cost_mean,
                on_frontier=m.label in frontier,
                versus_best_member=versus,
                versus_best_tuned_single=(
                    compare(m.label, m.test_correct, either.label, either.test_correct, seed=seed)
                    if m.family in ("ensemble", "cascade", "router")
                    else None
                ),
                strategy=m.strategy,
                details=m.details,
            )
        )
    curves: dict[str, list[tuple[float, float]]] = {}
    for m in methods:
        if m.family == "cascade":
            name = m.label.split(" @ ")[0]
            curves.setdefault(name, []).append((m.test_cost_mean, m.test_accuracy))
    return TuneSummary(
        command=command,
        created=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        dataset=dataset.name,
        sha256=dataset.sha256,
        split=dataset.split or split.describe(len(dataset.items)),
        members=members,
        best_member=best.label,
        rows=rows,
        curves={k: sorted(v) for k, v in curves.items()},
    )


def _frontier(methods: Sequence[TunedMethod]) -> set[str]:
    """Labels of the methods no other beats on test accuracy at no more test CPU cost."""
    out = set()
    for m in methods:
        dominated = any(
            o.test_cost_mean <= m.test_cost_mean
            and o.test_accuracy >= m.test_accuracy
            and (o.test_cost_mean < m.test_cost_mean or o.test_accuracy > m.test_accuracy)
            for o in methods
        )
        if not dominated:
            out.add(m.label)
    return out


def choose(summary: TuneSummary, *, budget: float | None, max_share: float | None) -> TuneRow:
    """The deployable method (it has a strategy config) with the best dev accuracy within the budget on
    dev: mean CPU seconds per item (`budget`), or a share of the strongest member's CPU seconds
    (`max_share`); without either, the best dev accuracy overall."""
    strongest = next(r for r in summary.rows if r.label == f"single:{summary.members[-1]}")
    limit = (
        budget if budget is not None else (max_share * strongest.dev_cpu_s if max_share is not None else None)
    )
    fits = [r for r in summary.rows if r.strategy is not None and (limit is None or r.dev_cpu_s <= limit)]
    if not fits:
        raise ConfigError(
            f"no tuned method fits a budget of {limit:.3g} CPU s per item on dev (the cheapest costs "
            f"{min(r.dev_cpu_s for r in summary.rows):.3g}): raise --budget or --max-share"
        )
    return max(fits, key=lambda r: (r.dev_accuracy, -r.dev_cpu_s))


def write_config(row: TuneRow, members_config: EnsembleConfig, summary: TuneSummary, path: Path) -> Path:
    """The chosen method as an ensemble config, its measured figures in the comments."""
    assert row.strategy is not None
    used = set(row.members) | set(_helpers(row.strategy))
    config = {
        "members": [m.model_dump(exclude_none=True) for m in members_config.members if _name(m) in used],
        "strategy": row.strategy,
    }
    versus = row.versus_best_member
    lines = [
        f"# Tuned by: {summary.command} ({summary.created})",
        f"# Data: {summary.dataset} (sha256 {summary.sha256[:16]}), {summary.split}.",
        f"# Chosen on dev: {row.label}, dev accuracy {100 * row.dev_accuracy:.1f}%, "
        f"{row.dev_cpu_s:.3g} CPU s per item{f' (budget: {summary.budget})' if summary.budget else ''}.",
        f"# Measured on test: accuracy {100 * row.test_accuracy:.1f}% (95% CI {100 * row.ci_low:.1f}–"
        f"{100 * row.ci_high:.1f}), {row.test_cpu_s:.3g} CPU s per item.",
    ]
    if versus is not None:
        lines.append(
            f"# Against {versus.b} on test: {100 * versus.gain:+.1f} points, paired bootstrap 95% CI "
            f"[{100 * versus.ci_low:+.1f}, {100 * versus.ci_high:+.1f}]."
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n" + yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def _name(member_config: Any) -> str:
    return member_config.name or member_config.model


def _helpers(strategy: dict[str, Any]) -> list[str]:
    scorer = strategy.get("params", {}).get("scorer", {})
    return [*scorer.get("peers", []), *([scorer["verifier"]] if scorer.get("verifier") else [])]


def load_split_dataset(data: str, data_dir: Path | None, split: Split) -> Dataset:
    return load_dataset(data, data_dir_path=data_dir, split=split.model_copy(update={"part": "both"}))
