"""`llm-ensemble bench`: speed and overhead as ratios measured in one run, so they hold on any machine.

- scoring: per-item choice scoring with the prompt encoded once per member (KV cache shared by the choices)
  vs every (prompt, choice) pair in one batch; same predictions required.
- fusion: token fusion's wall time vs the sum of the members' own `generate` on the same request.
- concurrency: each response-level strategy over ScriptedMembers with fixed delays vs the sum and the max
  of the delays (1.0 x max = fully concurrent, 1.0 x sum = sequential).
- memory: peak RSS vs the sum of the members' weight sizes.
- gpu: tokens/s per member when CUDA is available."""

from __future__ import annotations

import gc
import resource
import statistics
import time
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import TypeVar

import torch
from pydantic import BaseModel, Field

from ensemble_core.ensemble import Ensemble
from ensemble_core.errors import EnsembleError
from ensemble_core.members.base import Member
from ensemble_core.members.scripted import ScriptedMember
from ensemble_core.strategies.registry import STRATEGIES, strategy_class
from ensemble_core.types import Message, Params, Request

Log = Callable[[str], None]
T = TypeVar("T")
_DELAYS = {"a": 0.10, "b": 0.20, "c": 0.30}
_QUESTION = "What is the capital of France? Answer in one sentence."
# Parameters a strategy needs to run on scripted members (which cannot score): a constant pairwise ranker.
_SCRIPTED_PARAMS: dict[str, dict[str, object]] = {"rank-and-fuse": {"ranker": lambda a, b, request: 0.5}}


class Figure(BaseModel):
    """One measured figure: a ratio (or an absolute value where no ratio applies) and how it was measured."""

    section: str
    name: str
    value: float | None
    unit: str
    detail: str = ""


class BenchReport(BaseModel):
    figures: list[Figure] = Field(default_factory=list)
    skipped: dict[str, str] = Field(default_factory=dict)


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _cpu_collect(results: Iterable[T]) -> tuple[list[T], float]:
    """Consume an iterator; its items and the process CPU seconds it took."""
    start = time.process_time()
    items = list(results)
    return items, time.process_time() - start


def bench_scoring(members: list[Member], items: int, data_dir: Path | None) -> list[Figure]:
    """Process CPU seconds per item (a fair measure on a shared machine) of the two scoring paths."""
    from ensemble_core.eval.choice_scoring import score_items
    from ensemble_core.eval.datasets import load_dataset
    from ensemble_core.eval.items import ChoiceItem

    figures = []
    for set_name in ("arc_easy", "hellaswag"):
        data = [
            i
            for i in load_dataset(set_name, data_dir_path=data_dir, limit=items).items
            if isinstance(i, ChoiceItem)
        ]
        for member in members:
            list(score_items(member, data[:2]))  # warm-up
            shared_out, shared = _cpu_collect(score_items(member, data, with_prompt=False))
            flat_out, flat = _cpu_collect(score_items(member, data, shared_prompt=False, with_prompt=False))
            same = all(
                a.prediction("chars") == b.prediction("chars")
                for (_, a), (_, b) in zip(shared_out, flat_out, strict=True)
            )
            figures.append(
                Figure(
                    section="scoring",
                    name=f"{set_name} {member.name}: per-choice batch / shared prompt (CPU time)",
                    value=flat / shared,
                    unit="x",
                    detail=f"{len(data)} items; shared prompt {shared / len(data) * 1000:.0f} ms CPU/item, "
                    f"per-choice batch {flat / len(data) * 1000:.0f} ms CPU/item; same predictions: {same}",
                )
            )
    return figures


def _request(max_tokens: int) -> Request:
    return Request(
        messages=[Message(role="user", content=_QUESTION)], params=Params(max_tokens=max_tokens, seed=0)
    )


def bench_fusion(members: list[Member], max_tokens: int) -> list[Figure]:
    """Wall time (latency) and process CPU time (work) of token fusion vs each member generating alone."""
    request = _request(max_tokens)
    for member in members:
        member.generate(request)  # warm-up
    own, own_cpu = [], 0.0
    for member in members:
        start = time.process_time()
        own.append(member.generate(request))
        own_cpu += time.process_time() - start
    own_s = sum(g.latency_s for g in own)
    ensemble = Ensemble(members, "token-fusion")
    ensemble.run(_QUESTION, max_tokens=max_tokens, seed=0)
    start, cpu_start = time.perf_counter(), time.process_time()
    result = ensemble.run(_QUESTION, max_tokens=max_tokens, seed=0)
    fused_s, fused_cpu = time.perf_counter() - start, time.process_time() - cpu_start
    fused_tokens = max(1, len(result.text.split()))
    own_tokens = ", ".join(f"{g.member} {g.usage.output_tokens} tokens" for g in own)
    return [
        Figure(
            section="fusion",
            name="token fusion / sum of members' generate (wall time)",
            value=fused_s / own_s,
            unit="x",
            detail=f"fusion {fused_s:.2f} s for {fused_tokens} words; members {own_s:.2f} s ({own_tokens})",
        ),
        Figure(
            section="fusion",
            name="token fusion / sum of members' generate (CPU time)",
            value=fused_cpu / own_cpu,
            unit="x",
            detail=f"fusion {fused_cpu:.2f} s CPU; members {own_cpu:.2f} s CPU",
        ),
    ]


def bench_concurrency(repeats: int = 3) -> tuple[list[Figure], dict[str, str]]:
    figures, skipped = [], {}
    total, longest = sum(_DELAYS.values()), max(_DELAYS.values())
    for name in sorted(STRATEGIES):
        if name == "single" or hasattr(strategy_class(name), "aroute"):
            continue  # one member answers: nothing to run concurrently
        members = [
            ScriptedMember(n, ["Paris is the capital of France."], delay_s=d) for n, d in _DELAYS.items()
        ]
        try:
            ensemble = Ensemble(members, name, **_SCRIPTED_PARAMS.get(name, {}))
            ensemble.run(_QUESTION)
            times = [_timed(partial(ensemble.run, _QUESTION)) for _ in range(repeats)]
        except (EnsembleError, NotImplementedError, TypeError, ValueError) as err:
            skipped[f"concurrency {name}"] = f"{type(err).__name__}: {err}"[:200]
            continue
        wall = statistics.median(times)
        figures.append(
            Figure(
                section="concurrency",
                name=f"{name}: wall / max member delay",
                value=wall / longest,
                unit="x",
                detail=f"wall {wall:.3f} s; wall / sum of delays {wall / total:.2f}x "
                f"(delays {', '.join(f'{d:.1f}' for d in _DELAYS.values())} s)",
            )
        )
    return figures, skipped


def _weights_bytes(member: Member) -> int:
    model = getattr(member, "model", None)
    if model is None:
        return 0
    return sum(p.numel() * p.element_size() for p in model.parameters())


def bench_memory(members: list[Member], baseline_kb: int) -> list[Figure]:
    gc.collect()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    sizes = sum(_weights_bytes(m) for m in members)
    if not sizes:
        return []
    baseline = baseline_kb * 1024
    return [
        Figure(
            section="memory",
            name="peak RSS / sum of member weight sizes",
            value=peak / sizes,
            unit="x",
            detail=f"peak {peak / 2**20:.0f} MiB, weights {sizes / 2**20:.0f} MiB "
            f"({', '.join(f'{m.name} {_weights_bytes(m) / 2**20:.0f}' for m in members)}), "
            f"before loading {baseline / 2**20:.0f} MiB (Python, torch, transformers)",
        ),
        Figure(
            section="memory",
            name="(peak RSS - before loading) / sum of member weight sizes",
            value=(peak - baseline) / sizes,
            unit="x",
        ),
    ]


def bench_gpu(max_tokens: int) -> list[Figure]:
    from ensemble_core.defaults import small_members

    figures = []
    request = _request(max_tokens)
    for member in small_members(device="cuda"):
        member.generate(request)
        generation = member.generate(request)
        figures.append(
            Figure(
                section="gpu",
                name=f"{member.name} tokens/s on {torch.cuda.get_device_name()}",
                value=generation.usage.output_tokens / generation.latency_s,
                unit="tokens/s",
            )
        )
    return figures


def run_bench(*, items: int, max_tokens: int, data_dir: Path | None, skip: set[str], log: Log) -> BenchReport:
    """Every section not in `skip`; a section that cannot run here is listed in `skipped` with the reason."""
    from ensemble_core.defaults import small_members

    report = BenchReport()
    baseline_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def section(name: str, fn: Callable[[], list[Figure]]) -> None:
        if name in skip:
            report.skipped[name] = "--skip"
            return
        log(f"[bold]{name}[/bold]")
        for figure in fn():
            report.figures.append(figure)
            value = "n/a" if figure.value is None else f"{figure.value:.2f} {figure.unit}"
            log(
                f"  {figure.name}: {value}  ({figure.detail})"
                if figure.detail
                else f"  {figure.name}: {value}"
            )

    def concurrency() -> list[Figure]:
        figures, skipped = bench_concurrency()
        report.skipped.update(skipped)
        return figures

    section("concurrency", concurrency)
    members = small_members()
    for member in members:
        member.load()
    section("scoring", lambda: bench_scoring(members, items, data_dir))
    if "token-fusion" in STRATEGIES:
        section("fusion", lambda: bench_fusion(members, max_tokens))
    else:
        report.skipped["fusion"] = "token-fusion is not registered"
    section("memory", lambda: bench_memory(members, baseline_kb))
    if torch.cuda.is_available():
        section("gpu", lambda: bench_gpu(max_tokens))
    else:
        report.skipped["gpu"] = "no CUDA device"
    for name, why in report.skipped.items():
        log(f"skipped {name}: {why}")
    return report
