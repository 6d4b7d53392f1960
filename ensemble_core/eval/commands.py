"""`llm-ensemble eval` and `llm-ensemble bench`, as typer command functions (registered in
ensemble_core.cli)."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from ensemble_core.cli_errors import failed
from ensemble_core.errors import EnsembleError
from ensemble_core.eval.plotting import require_matplotlib
from ensemble_core.members.base import Member

_console = Console(stderr=True)


def _members(config: Path | None) -> list[Member]:
    if config is None:
        from ensemble_core.defaults import default_members

        return default_members()
    from ensemble_core.config import load_config

    return load_config(config).build_members()


def _command_line() -> str:
    return "llm-ensemble " + shlex.join(sys.argv[1:])


def eval_command(
    data: Annotated[
        str,
        typer.Option("--data", "-d", help="a public set (arc_easy, piqa, hellaswag, ...) or a JSONL file"),
    ],
    strategies: Annotated[
        str | None,
        typer.Option(
            "--strategies",
            "-s",
            help="comma-separated specs: single:MEMBER, choice-ensemble\\[weights=packllm-sim], any "
            "registered strategy, with parameters as name\\[key=value,...]; default: each member alone and "
            "choice-ensemble (uniform and packllm-sim)",
        ),
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option("--limit", "-n", help="the first N items (0: all; default 500, or all of a --split)"),
    ] = None,
    split: Annotated[
        str | None,
        typer.Option("--split", help="dev, test or both: the items of a fixed split (seeded, by item id)"),
    ] = None,
    split_seed: Annotated[int, typer.Option("--split-seed", help="the split's seed")] = 0,
    dev_size: Annotated[int, typer.Option("--dev-size", help="dev items of the split")] = 300,
    test_size: Annotated[int, typer.Option("--test-size", help="test items of the split")] = 500,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="report folder, also the resume cache (default: reports/eval/SET)"),
    ] = None,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="folder of the public sets")] = None,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="ensemble config whose members to use")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="seed for sampling, shuffles and bootstrap")] = 0,
    norm: Annotated[
        str, typer.Option("--norm", help="normalise choice log-likelihood by chars, bytes or none")
    ] = "chars",
    max_tokens: Annotated[
        int | None, typer.Option("--max-tokens", help="answer length for generating strategies")
    ] = None,
    protocol: Annotated[
        str,
        typer.Option(
            "--protocol", help="multiple choice: auto (log-likelihood where it applies) or generate"
        ),
    ] = "auto",
    threads: Annotated[int, typer.Option("--threads", help="torch CPU threads (0: torch's default)")] = 0,
    workers: Annotated[int, typer.Option("--workers", help="scoring threads per member")] = 1,
) -> None:
    """Evaluate strategies on a data set; writes report.md, summary.json, items.jsonl and plots to --out.
    Interrupted runs continue where they stopped when run again with the same --out."""
    import torch

    from ensemble_core.eval.datasets import load_dataset
    from ensemble_core.eval.report import build_summary, write_report
    from ensemble_core.eval.runner import Evaluation
    from ensemble_core.eval.specs import parse_specs
    from ensemble_core.eval.splits import Split

    if norm not in ("chars", "bytes", "none"):
        raise typer.BadParameter(f"--norm {norm!r}: choose chars, bytes or none")
    if protocol not in ("auto", "generate"):
        raise typer.BadParameter(f"--protocol {protocol!r}: choose auto or generate")
    if split not in (None, "dev", "test", "both"):
        raise typer.BadParameter(f"--split {split!r}: choose dev, test or both")
    try:
        require_matplotlib()
        if threads:
            torch.set_num_threads(threads)
        chosen = (
            None
            if split is None
            else Split(part=split, seed=split_seed, dev_size=dev_size, test_size=test_size)
        )
        if limit is None:
            limit = 0 if chosen else 500
        dataset = load_dataset(data, data_dir_path=data_dir, limit=limit or None, seed=seed, split=chosen)
        members = _members(config)
        names = [m.name for m in members]
        spec_text = strategies or ",".join(
            [f"single:{n}" for n in names] + ["choice-ensemble", "choice-ensemble[weights=packllm-sim]"]
        )
        folder = out or Path("reports") / "eval" / dataset.name
        evaluation = Evaluation(
            dataset,
            members,
            parse_specs(spec_text),
            folder,
            seed=seed,
            norm=norm,  # type: ignore[arg-type]
            max_tokens=max_tokens,
            mc_protocol=protocol,  # type: ignore[arg-type]
            workers=workers,
        )
        with _progress() as factory:
            results = evaluation.run(factory)
        singles = {t.label for t in evaluation.targets if t.is_single}
        summary = build_summary(
            command=_command_line(),
            dataset=dataset,
            settings=evaluation.settings,
            results=results,
            singles=singles,
            scores=evaluation.scores,
            notes=evaluation.notes,
        )
        report = write_report(summary, results, folder)
    except EnsembleError as err:
        raise failed(err) from err
    table = Table(title=f"{dataset.name}: {len(dataset.items)} items", title_justify="left")
    for column in ("strategy", "protocol", "accuracy %", "95% CI", "latency/item s"):
        table.add_column(column)
    for row in summary.strategies:
        table.add_row(
            escape(row.strategy),
            row.protocol,
            f"{100 * row.accuracy:.1f}",
            f"{100 * row.ci_low:.1f}–{100 * row.ci_high:.1f}",
            f"{row.latency_s:.3f}",
        )
    Console().print(table)
    for c in summary.comparisons:
        Console().print(
            escape(
                f"{c.a} vs {c.b}: {100 * c.gain:+.1f} points, 95% CI [{100 * c.ci_low:.1f}, "
                f"{100 * c.ci_high:.1f}]"
            )
        )
    Console().print(f"report: {report}")


class _progress:
    """A rich progress display; each phase (member scoring, strategy) gets its own bar."""

    def __enter__(self) -> Callable[[str, int], Callable[[], None]]:
        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=_console,
        )
        self.bar.__enter__()

        def factory(description: str, total: int) -> Callable[[], None]:
            task = self.bar.add_task(description, total=total)
            return lambda: self.bar.advance(task)

        return factory

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.bar.__exit__(exc_type, exc, traceback)


def bench_command(
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="also write the figures as JSON here")
    ] = None,
    items: Annotated[
        int, typer.Option("--items", help="multiple-choice items for the scoring benchmark")
    ] = 40,
    max_tokens: Annotated[int, typer.Option("--max-tokens", help="tokens generated per call")] = 32,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="folder of the public sets")] = None,
    skip: Annotated[
        str | None,
        typer.Option(
            "--skip", help="comma-separated sections to skip: scoring,fusion,concurrency,memory,gpu"
        ),
    ] = None,
) -> None:
    """Speed and overhead as ratios measured in one run: choice scoring paths, token fusion vs the members'
    own generate, concurrency of response-level strategies, memory, GPU tokens/s (the adapter's overhead:
    benchmarks/adapter_overhead.py)."""
    from ensemble_core.eval.bench import run_bench

    skipped = set((skip or "").split(",")) - {""}
    try:
        report = run_bench(
            items=items,
            max_tokens=max_tokens,
            data_dir=data_dir,
            skip=skipped,
            log=lambda line: Console().print(line),
        )
    except EnsembleError as err:
        raise failed(err) from err
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "bench.json").write_text(report.model_dump_json(indent=2), encoding="utf-8")
        Console().print(f"figures: {out / 'bench.json'}")


def tune_command(
    data: Annotated[str, typer.Option("--data", "-d", help="a public set or a JSONL file")],
    out: Annotated[Path, typer.Option("--out", "-o", help="the ensemble config to write (YAML)")],
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="config whose members take part (default: the four packaged)"),
    ] = None,
    budget: Annotated[
        float | None,
        typer.Option("--budget", help="most CPU seconds per item (on dev) the chosen method may cost"),
    ] = None,
    max_share: Annotated[
        float | None,
        typer.Option("--max-share", help="most share of the strongest member's CPU seconds it may cost"),
    ] = None,
    report: Annotated[
        Path | None,
        typer.Option("--report", help="report folder, also the cache of scores (default: reports/tune/SET)"),
    ] = None,
    split_seed: Annotated[int, typer.Option("--split-seed", help="the split's seed")] = 0,
    dev_size: Annotated[int, typer.Option("--dev-size", help="dev items of the split")] = 300,
    test_size: Annotated[int, typer.Option("--test-size", help="test items of the split")] = 500,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="folder of the public sets")] = None,
    threads: Annotated[int, typer.Option("--threads", help="torch CPU threads (0: torch's default)")] = 0,
    verify: Annotated[
        str | None,
        typer.Option(
            "--verify",
            help="short-answer sets: comma-separated members whose answers are verified (P(Yes) by "
            "themselves and by the strongest member); default: all but the strongest",
        ),
    ] = None,
) -> None:
    """Fit every tunable method on a fixed dev split, judge each on the test split, report them, and write the
    config of the best one under the budget (its test accuracy and cost in the comments) for `ask --config`
    and `EnsembleChatModel.from_config`."""
    import torch

    from ensemble_core.config import load_config
    from ensemble_core.eval import tune_report
    from ensemble_core.eval.splits import Split
    from ensemble_core.eval.tune import choose, load_split_dataset, tune, write_config

    if budget is not None and max_share is not None:
        raise typer.BadParameter("give --budget or --max-share, not both")
    try:
        require_matplotlib()
        if threads:
            torch.set_num_threads(threads)
        split = Split(part="both", seed=split_seed, dev_size=dev_size, test_size=test_size)
        dataset = load_split_dataset(data, data_dir, split)
        members_config = load_config(config or _PACKAGED_FOUR)
        members = members_config.build_members()
        folder = report or Path("reports") / "tune" / dataset.name
        with _progress() as factory:
            summary, _ = tune(
                dataset,
                members,
                split,
                folder,
                factory,
                command=_command_line(),
                verified=verify.split(",") if verify else None,
            )
        row = choose(summary, budget=budget, max_share=max_share)
        summary.chosen = row.label
        if budget is not None:
            summary.budget = f"{budget} CPU s per item"
        elif max_share is not None:
            summary.budget = f"{max_share:.0%} of {summary.members[-1]}'s CPU seconds"
        written = write_config(row, members_config, summary, out)
        shown = tune_report.write(summary, folder)
    except EnsembleError as err:
        raise failed(err) from err
    table = Table(title=f"{dataset.name}: fitted on dev, judged on test", title_justify="left")
    for column in ("method", "dev acc %", "test acc %", "test CPU s/item", "vs best member"):
        table.add_column(column)
    for r in sorted(summary.rows, key=lambda r: r.test_cpu_s):
        versus = r.versus_best_member
        table.add_row(
            r.label,
            f"{100 * r.dev_accuracy:.1f}",
            f"{100 * r.test_accuracy:.1f}",
            f"{r.test_cpu_s:.3f}",
            "best"
            if versus is None
            else f"{100 * versus.gain:+.1f} [{100 * versus.ci_low:+.1f}, {100 * versus.ci_high:+.1f}]",
        )
    Console().print(table)
    Console().print(f"chosen on dev: {escape(row.label)} -> {written}; report: {shown}")


_PACKAGED_FOUR = {
    "members": [
        {"type": "packaged", "model": "smollm2"},
        {"type": "packaged", "model": "gemma3"},
        {"type": "packaged", "model": "qwen05"},
        {"type": "packaged", "model": "qwen15"},
    ]
}
