"""The report folder: `report.md` (header with the command, seed and data hash; accuracy with Wilson 95%
intervals, the oracle ceiling, cost per strategy; a paired test of the best ensemble against the best member),
`summary.json`, `items.jsonl`, and PNG plots (accuracy with interval bars; quality against cost)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from ensemble_core.eval.choice_scoring import ChoiceScores
from ensemble_core.eval.datasets import Dataset
from ensemble_core.eval.items import ChoiceItem
from ensemble_core.eval.metrics import PairedComparison, compare, wilson_interval
from ensemble_core.eval.plotting import pyplot
from ensemble_core.eval.protocols import PROTOCOL_TEXT
from ensemble_core.eval.runner import EvalSettings, ItemResult


class StrategySummary(BaseModel):
    """Accuracy and mean cost per item of one strategy."""

    model_config = ConfigDict(extra="forbid")

    strategy: str
    protocol: str
    single: bool
    n: int
    correct: int
    accuracy: float
    ci_low: float
    ci_high: float
    calls: float
    tokens: float
    latency_s: float
    errors: int = 0


class CurvePoint(BaseModel):
    """One threshold of a cascade: the share of items escalated, accuracy and mean seconds per item."""

    escalated: float
    accuracy: float
    latency_s: float


class Summary(BaseModel):
    """Everything the report says, as data (summary.json)."""

    model_config = ConfigDict(extra="forbid")

    command: str
    created: str
    dataset: str
    data_path: str
    sha256: str
    split: str | None = None
    settings: EvalSettings
    chance: float | None
    strategies: list[StrategySummary]
    oracle: StrategySummary | None = None
    comparisons: list[PairedComparison] = Field(default_factory=list)
    cascade_curve: list[CurvePoint] = Field(default_factory=list)
    cascade_order: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)


def summarise(results: Sequence[ItemResult], singles: set[str]) -> list[StrategySummary]:
    by_strategy: dict[str, list[ItemResult]] = defaultdict(list)
    for r in results:
        by_strategy[r.strategy].append(r)
    return [_summary(name, rows, name in singles) for name, rows in by_strategy.items()]


def _summary(name: str, rows: list[ItemResult], single: bool) -> StrategySummary:
    n = len(rows)
    correct = sum(r.correct for r in rows)
    low, high = wilson_interval(correct, n)
    return StrategySummary(
        strategy=name,
        protocol=rows[0].protocol,
        single=single,
        n=n,
        correct=correct,
        accuracy=correct / max(n, 1),
        ci_low=low,
        ci_high=high,
        calls=sum(r.calls for r in rows) / max(n, 1),
        tokens=sum(r.tokens for r in rows) / max(n, 1),
        latency_s=sum(r.latency_s for r in rows) / max(n, 1),
        errors=sum(r.error is not None for r in rows),
    )


def oracle(results: Sequence[ItemResult], singles: set[str], protocol: str) -> StrategySummary | None:
    """Any member right: the ceiling a strategy that picks among the members' answers could reach."""
    rows = [r for r in results if r.strategy in singles and r.protocol == protocol]
    if not rows:
        return None
    right: dict[str, bool] = defaultdict(bool)
    for r in rows:
        right[r.id] |= r.correct
    fake = [ItemResult(id=i, strategy="oracle", protocol=protocol, correct=c) for i, c in right.items()]
    return _summary(f"oracle: any member right ({protocol})", fake, single=False)


def best_comparisons(
    summaries: list[StrategySummary], results: Sequence[ItemResult], seed: int
) -> list[PairedComparison]:
    """Per protocol: the most accurate ensemble strategy against the most accurate single member."""
    by_label: dict[str, dict[str, bool]] = defaultdict(dict)
    for r in results:
        by_label[r.strategy][r.id] = r.correct
    out = []
    for protocol in dict.fromkeys(s.protocol for s in summaries):
        singles = [s for s in summaries if s.single and (s.protocol == protocol or protocol == "routed")]
        ensembles = [s for s in summaries if not s.single and s.protocol == protocol]
        if protocol == "routed":
            singles = [s for s in summaries if s.single and s.protocol == "loglik"]
        if not singles or not ensembles:
            continue
        best_single = max(singles, key=lambda s: s.accuracy)
        best_ensemble = max(ensembles, key=lambda s: s.accuracy)
        ids = sorted(set(by_label[best_single.strategy]) & set(by_label[best_ensemble.strategy]))
        a = [by_label[best_ensemble.strategy][i] for i in ids]
        b = [by_label[best_single.strategy][i] for i in ids]
        out.append(compare(best_ensemble.strategy, a, best_single.strategy, b, seed=seed))
    return out


def cascade_curve(
    items: Sequence[ChoiceItem], scores: dict[str, dict[str, ChoiceScores]], order: list[str], norm: str
) -> list[CurvePoint]:
    """A two-member cascade on choice scores as its threshold moves: the first member answers unless its
    margin (best minus second-best normalised score) is among the lowest, which go to the second member."""
    if len(order) < 2 or not items:
        return []
    cheap, strong = order[0], order[1]

    def margin(s: ChoiceScores) -> float:
        top = sorted(s.normalised(norm), reverse=True)
        return top[0] - top[1]

    ranked = sorted(items, key=lambda i: margin(scores[cheap][i.id]))
    n = len(ranked)
    points = []
    for k in range(0, n + 1, max(1, n // 20)):
        escalated, kept = ranked[:k], ranked[k:]
        right = sum(scores[strong][i.id].prediction(norm) == i.gold for i in escalated)
        right += sum(scores[cheap][i.id].prediction(norm) == i.gold for i in kept)
        seconds = sum(scores[cheap][i.id].latency_s for i in items) + sum(
            scores[strong][i.id].latency_s for i in escalated
        )
        points.append(CurvePoint(escalated=k / n, accuracy=right / n, latency_s=seconds / n))
    return points


def build_summary(
    *,
    command: str,
    dataset: Dataset,
    settings: EvalSettings,
    results: Sequence[ItemResult],
    singles: set[str],
    scores: dict[str, dict[str, ChoiceScores]],
    notes: list[str],
) -> Summary:
    strategies = summarise(results, singles)
    choice_items = [i for i in dataset.items if isinstance(i, ChoiceItem)]
    chance = sum(1 / len(i.choices) for i in choice_items) / len(choice_items) if choice_items else None
    protocol = "loglik" if any(s.protocol == "loglik" for s in strategies) else "generate"
    order = [m for m in settings.members if m in scores]
    return Summary(
        command=command,
        created=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        dataset=dataset.name,
        data_path=dataset.path,
        sha256=dataset.sha256,
        split=dataset.split,
        settings=settings,
        chance=chance,
        strategies=strategies,
        oracle=oracle(results, singles, protocol),
        comparisons=best_comparisons(strategies, results, settings.seed),
        cascade_curve=cascade_curve(choice_items, scores, order, settings.norm) if scores else [],
        cascade_order=order[:2],
        notes=notes,
    )


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def markdown(summary: Summary) -> str:
    s = summary.settings
    lines = [
        f"# {summary.dataset}: {summary.strategies[0].n if summary.strategies else 0} items",
        "",
        f"- command: `{summary.command}`",
        f"- data: `{summary.data_path}` sha256 `{summary.sha256}`"
        + (f"; {summary.split}" if summary.split else ""),
        f"- seed {s.seed}; choice scores normalised by {s.norm}; members: {', '.join(s.members)}; "
        f"{summary.created}",
    ]
    if summary.chance is not None:
        lines.append(f"- chance level: {_pct(summary.chance)}%")
    lines += ["", PROTOCOL_TEXT, ""]
    lines += [
        "| strategy | protocol | accuracy % | 95% CI (Wilson) | n | calls/item | tokens/item | latency/item "
        "s |",
        "|---|---|---:|---|---:|---:|---:|---:|",
    ]
    rows = summary.strategies + ([summary.oracle] if summary.oracle else [])
    for row in rows:
        errors = f" ({row.errors} errors)" if row.errors else ""
        is_oracle = row is summary.oracle
        cost = "— | — | —" if is_oracle else f"{row.calls:.2f} | {row.tokens:.0f} | {row.latency_s:.3f}"
        lines.append(
            f"| {row.strategy}{errors} | {row.protocol} | {_pct(row.accuracy)} | "
            f"{_pct(row.ci_low)}–{_pct(row.ci_high)} | {row.n} | {cost} |"
        )
    lines += ["", "## Does an ensemble beat the best member?", ""]
    if not summary.comparisons:
        lines.append("No ensemble strategy and single member were run under the same protocol.")
    for c in summary.comparisons:
        verdict = (
            "yes: the gain is significant"
            if c.ci_low > 0
            else "no: it is significantly worse"
            if c.ci_high < 0
            else "not shown: the interval includes 0"
        )
        lines.append(
            f"- **{c.a}** vs **{c.b}** on {c.n} paired items: {100 * c.gain:+.1f} points, paired bootstrap "
            "95% CI "
            f"[{_pct(c.ci_low)}, {_pct(c.ci_high)}]; McNemar exact p = {c.p_value:.3g} ({c.a_only} items "
            f"only {c.a} got right, {c.b_only} only {c.b}). Beats the best member: {verdict}."
        )
    if summary.cascade_curve:
        cheap, strong = summary.cascade_order
        lines += [
            "",
            f"## Cascade on choice scores ({cheap} first, {strong} when {cheap}'s margin is low)",
            "",
            "| escalated % | accuracy % | latency/item s |",
            "|---:|---:|---:|",
        ]
        for p in summary.cascade_curve[:: max(1, len(summary.cascade_curve) // 5)]:
            lines.append(f"| {_pct(p.escalated)} | {_pct(p.accuracy)} | {p.latency_s:.3f} |")
    if summary.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in summary.notes]
    lines += [
        "",
        "Files: `items.jsonl` (one line per strategy and item), `summary.json`, `accuracy.png`"
        + (", `cost_quality.png`" if summary.cascade_curve else "")
        + ".",
        "",
    ]
    return "\n".join(lines)


def plot(summary: Summary, out: Path) -> list[Path]:
    """accuracy.png (bars with Wilson intervals) and, with choice scores, cost_quality.png."""
    plt = pyplot()

    written = []
    rows = summary.strategies
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 2.2))
    colours = {"loglik": "tab:blue", "routed": "tab:green", "generate": "tab:orange"}
    for y, row in enumerate(rows):
        ax.barh(
            y,
            100 * row.accuracy,
            color=colours.get(row.protocol, "grey"),
            alpha=0.8 if row.single else 1.0,
            hatch="//" if row.single else None,
        )
        ax.errorbar(
            100 * row.accuracy,
            y,
            xerr=[[100 * (row.accuracy - row.ci_low)], [100 * (row.ci_high - row.accuracy)]],
            color="black",
            capsize=3,
        )
    if summary.oracle:
        ax.axvline(
            100 * summary.oracle.accuracy, color="tab:red", linestyle="--", label="oracle (any member right)"
        )
    if summary.chance:
        ax.axvline(100 * summary.chance, color="grey", linestyle=":", label="chance")
    ax.set_yticks(range(len(rows)), [f"{r.strategy} [{r.protocol}]" for r in rows])
    ax.set_xlabel("accuracy % (95% Wilson interval)")
    ax.set_title(f"{summary.dataset} ({rows[0].n if rows else 0} items)")
    ax.legend(
        loc="upper center", bbox_to_anchor=(0.5, -0.12 - 1.2 / (len(rows) + 3)), ncol=2, fontsize="small"
    )
    fig.tight_layout()
    written.append(out / "accuracy.png")
    fig.savefig(written[-1], dpi=120)
    plt.close(fig)
    if summary.cascade_curve:
        fig, ax = plt.subplots(figsize=(6, 4.5))
        ax.plot(
            [p.latency_s for p in summary.cascade_curve],
            [100 * p.accuracy for p in summary.cascade_curve],
            marker=".",
            label="cascade on choice scores (threshold moves)",
        )
        for row in rows:
            if row.protocol in ("loglik", "routed"):
                ax.scatter(row.latency_s, 100 * row.accuracy, zorder=3)
                ax.annotate(row.strategy, (row.latency_s, 100 * row.accuracy), fontsize="x-small")
        ax.set_xlabel("mean seconds per item (member scoring, measured)")
        ax.set_ylabel("accuracy %")
        ax.set_title(f"{summary.dataset}: quality vs cost")
        ax.legend(loc="lower right", fontsize="small")
        fig.tight_layout()
        written.append(out / "cost_quality.png")
        fig.savefig(written[-1], dpi=120)
        plt.close(fig)
    return written


def write_report(summary: Summary, results: Sequence[ItemResult], out: Path) -> Path:
    """Write report.md, summary.json, items.jsonl and the plots into `out`; returns report.md's path."""
    out.mkdir(parents=True, exist_ok=True)
    with (out / "items.jsonl").open("w", encoding="utf-8") as handle:
        for r in results:
            handle.write(r.model_dump_json() + "\n")
    (out / "summary.json").write_text(summary.model_dump_json(indent=2), encoding="utf-8")
    plot(summary, out)
    report = out / "report.md"
    report.write_text(markdown(summary), encoding="utf-8")
    return report
