"""The tune report: `tune.md` (the methods with dev and test figures and the paired comparison with the best
member), `tune.json`, and `cost_accuracy.png` (every method's test accuracy against its test CPU seconds per
item, the frontier marked, each cascade's curve along its dev frontier)."""

from __future__ import annotations

from pathlib import Path

from ensemble_core.eval.metrics import PairedComparison
from ensemble_core.eval.plotting import pyplot
from ensemble_core.eval.tune import TuneSummary


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _versus(v: PairedComparison | None, none: str) -> str:
    if v is None:
        return none
    mark = " **above 0**" if v.ci_low > 0 else (" below 0" if v.ci_high < 0 else "")
    return f"{100 * v.gain:+.1f} [{100 * v.ci_low:+.1f}, {100 * v.ci_high:+.1f}]{mark}, p = {v.p_value:.2g}"


def markdown(summary: TuneSummary) -> str:
    lines = [
        f"# tune: {summary.dataset}",
        "",
        f"- command: `{summary.command}` ({summary.created})",
        f"- data sha256 `{summary.sha256}`; {summary.split}",
        f"- members: {', '.join(summary.members)}; best member on test: `{summary.best_member}`",
        "- every method is fitted on the dev items only; test figures are reported once per method",
        "",
        "| method | dev acc % | dev CPU s/item | test acc % | 95% CI | test CPU s/item "
        "| vs best member, points (paired bootstrap 95% CI) "
        "| vs best member, raw or stacked alone | frontier |",
        "|---|---:|---:|---:|---|---:|---|---|:-:|",
    ]
    for r in sorted(summary.rows, key=lambda r: r.test_cpu_s):
        lines.append(
            f"| {r.label} | {_pct(r.dev_accuracy)} | {r.dev_cpu_s:.3f} | {_pct(r.test_accuracy)} | "
            f"{_pct(r.ci_low)}–{_pct(r.ci_high)} | {r.test_cpu_s:.3f} | "
            f"{_versus(r.versus_best_member, '(best member)')} | {_versus(r.versus_best_tuned_single, '')} | "
            f"{'●' if r.on_frontier else ''} |"
        )
    if summary.chosen:
        budget = f" (budget {summary.budget})" if summary.budget else ""
        lines += ["", f"Chosen on dev{budget}: `{summary.chosen}`."]
    return "\n".join(lines) + "\n"


def plot(summary: TuneSummary, path: Path) -> Path:
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(7.5, 5))
    for name, curve in summary.curves.items():
        ax.plot([c for c, _ in curve], [100 * a for _, a in curve], marker=".", alpha=0.5, label=name)
    colours = {
        "single": "tab:blue",
        "tuned-single": "tab:cyan",
        "ensemble": "tab:green",
        "cascade": "tab:orange",
        "router": "tab:purple",
    }
    for r in summary.rows:
        ax.scatter(
            r.test_cpu_s,
            100 * r.test_accuracy,
            color=colours.get(r.family, "grey"),
            marker="*" if r.on_frontier else "o",
            s=120 if r.on_frontier else 40,
            zorder=3,
        )
    for (cost, accuracy), labels in _labels_by_point(summary).items():
        ax.annotate(" = ".join(labels), (cost, accuracy), fontsize="x-small")
    front = sorted((r for r in summary.rows if r.on_frontier), key=lambda r: r.test_cpu_s)
    ax.step(
        [r.test_cpu_s for r in front],
        [100 * r.test_accuracy for r in front],
        where="post",
        color="black",
        linestyle="--",
        linewidth=0.8,
        label="frontier (★)",
    )
    ax.set_xlabel("test CPU seconds per item (measured)")
    ax.set_ylabel("test accuracy %")
    ax.set_title(f"{summary.dataset}: accuracy against cost (fitted on dev, judged on test)")
    ax.legend(fontsize="x-small", loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _labels_by_point(summary: TuneSummary) -> dict[tuple[float, float], list[str]]:
    """One label per plotted point, naming every method that lands on it (a member stacked alone often
    lands on the member raw), so labels do not print over each other."""
    points: dict[tuple[float, float], list[str]] = {}
    for r in summary.rows:
        name = r.label.split(" (")[0]
        if name == "choice-ensemble":
            name = r.label[len("choice-ensemble (") : -1]
        names = points.setdefault((round(r.test_cpu_s, 2), round(100 * r.test_accuracy, 1)), [])
        if name not in names:
            names.append(name)
    return points


def write(summary: TuneSummary, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "tune.json").write_text(summary.model_dump_json(indent=2), encoding="utf-8")
    plot(summary, out / "cost_accuracy.png")
    report = out / "tune.md"
    report.write_text(markdown(summary), encoding="utf-8")
    return report
