"""The evaluation loop: score or run every item once per member / strategy, caching each result in the out
folder as it is made, so an interrupted run continues where it stopped and a finished one is not re-run."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from ensemble_core.asyncio_bridge import run_sync
from ensemble_core.ensemble import Ensemble
from ensemble_core.errors import ConfigError, EnsembleError
from ensemble_core.eval.choice_ensemble import ChoiceEnsemble
from ensemble_core.eval.choice_scoring import ChoiceScores, score_items
from ensemble_core.eval.datasets import Dataset
from ensemble_core.eval.items import AnswerItem, ChoiceItem, Item
from ensemble_core.eval.metrics import answer_correct, choice_from_text
from ensemble_core.eval.protocols import Target, default_max_tokens, plan, request_for
from ensemble_core.eval.specs import CHOICE_ENSEMBLE, StrategySpec
from ensemble_core.members.base import Member
from ensemble_core.run_context import RunContext
from ensemble_core.strategies.registry import build_strategy
from ensemble_core.strategies.routing import Router

Norm = Literal["chars", "bytes", "none"]
# advance(description, total) -> step(): the caller's progress display.
ProgressFactory = Callable[[str, int], Callable[[], None]]


class EvalSettings(BaseModel):
    """What makes two runs comparable; a resumed run must match the one that wrote the cache."""

    model_config = ConfigDict(extra="forbid")

    dataset: str
    sha256: str
    seed: int = 0
    norm: Norm = "chars"
    members: list[str]
    max_tokens: int | None = None
    mc_protocol: Literal["auto", "generate"] = "auto"


class ItemResult(BaseModel):
    """One strategy on one item: its answer, whether it is right, and what it cost."""

    model_config = ConfigDict(extra="forbid")

    id: str
    strategy: str
    protocol: str
    correct: bool
    pred: int | None = None
    gold: int | None = None
    text: str | None = None
    chosen: str | None = None
    calls: int = 0
    tokens: int = 0
    latency_s: float = 0.0
    error: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)


class ResultCache:
    """Append-only JSONL files under `out/cache`, one per member's scores or per strategy, keyed by item
    id."""

    def __init__(self, folder: Path):
        self.folder = folder / "cache"
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.jsonl"

    def load(self, key: str) -> dict[str, dict[str, Any]]:
        path = self.path(key)
        if not path.exists():
            return {}
        records: dict[str, dict[str, Any]] = {}
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by an interrupted run: the item runs again
            records[record["id"]] = record["value"]
        return records

    def append(self, key: str, item_id: str, value: dict[str, Any]) -> None:
        line = json.dumps({"id": item_id, "value": value}, ensure_ascii=False) + "\n"
        with self._lock, self.path(key).open("a", encoding="utf-8") as handle:
            handle.write(line)


def check_settings(out: Path, settings: EvalSettings) -> None:
    """Write `run.json`, or check that a resumed run matches it (else name what differs and the fix)."""
    path = out / "run.json"
    if path.exists():
        previous = EvalSettings.model_validate_json(path.read_text(encoding="utf-8"))
        differs = [k for k, v in settings.model_dump().items() if previous.model_dump()[k] != v]
        if differs:
            raise ConfigError(
                f"{out} holds results of a different run ({', '.join(differs)} differ): use another --out "
                "folder, or delete this one to start again"
            )
        return
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(settings.model_dump_json(indent=2), encoding="utf-8")


class Evaluation:
    """One data set, the members, and the strategies to compare; `run()` fills the cache and returns
    results."""

    def __init__(
        self,
        dataset: Dataset,
        members: Sequence[Member],
        specs: list[StrategySpec],
        out: Path,
        *,
        seed: int = 0,
        norm: Norm = "chars",
        max_tokens: int | None = None,
        mc_protocol: Literal["auto", "generate"] = "auto",
        batch_choices: int = 4,
        workers: int = 1,
    ):
        if not dataset.items:
            raise ConfigError(f"data set {dataset.name!r} has no items (check --limit)")
        self.dataset = dataset
        self.members = {m.name: m for m in members}
        self.out = out
        self.seed = seed
        self.norm: Norm = norm
        self.max_tokens = max_tokens
        self.batch_choices = batch_choices
        self.workers = max(1, workers)
        self.targets, self.notes = plan(specs, dataset.kind, list(self.members), mc_protocol)
        self.settings = EvalSettings(
            dataset=dataset.name,
            sha256=dataset.sha256,
            seed=seed,
            norm=norm,
            members=list(self.members),
            max_tokens=max_tokens,
            mc_protocol=mc_protocol,
        )
        self.cache = ResultCache(out)
        self.scores: dict[str, dict[str, ChoiceScores]] = {}
        self._check_targets()

    def _check_targets(self) -> None:
        """Build every strategy now, so a bad name, parameter or capability fails before any work."""
        for target in self.targets:
            if target.spec.name == CHOICE_ENSEMBLE:
                ChoiceEnsemble(**target.spec.params)
            else:
                self._ensemble(target.spec)

    def _ensemble(self, spec: StrategySpec) -> Ensemble:
        return Ensemble(list(self.members.values()), build_strategy(spec.name, spec.params))

    @property
    def choice_items(self) -> list[ChoiceItem]:
        return [i for i in self.dataset.items if isinstance(i, ChoiceItem)]

    def needs_prompt_scores(self) -> bool:
        """Whether a strategy weighs members by the prompt's perplexity (PackLLM-sim): only then is the
        prompt's own log-probability worth its cost (the output layer on every prompt token)."""
        return any(
            t.spec.name == CHOICE_ENSEMBLE and t.spec.params.get("weights") == "packllm-sim"
            for t in self.targets
        )

    def needs_scores(self) -> bool:
        return any(t.protocol in ("loglik", "routed") for t in self.targets)

    # running ------------------------------------------------------------------------------------------------
    def run(self, progress: ProgressFactory | None = None) -> list[ItemResult]:
        check_settings(self.out, self.settings)
        torch.manual_seed(self.seed)
        step_for = progress or (lambda _description, _total: lambda: None)
        self.scores = self._score_all(step_for) if self.needs_scores() else {}
        results: list[ItemResult] = []
        for target in self.targets:
            if target.protocol == "loglik":
                results += [self._loglik(target, item, self.scores) for item in self.choice_items]
            else:
                results += self._run_target(target, self.scores, step_for)
        return results

    def _score_all(self, step_for: ProgressFactory) -> dict[str, dict[str, ChoiceScores]]:
        """Every member's choice scores for every item (all members: the oracle and choice-ensemble need
        them), each member into its own cache file. Members score one after another, so each one's CPU
        seconds are its own (members sharing the cores would slow each other's memory-bound passes); a
        member scores with `workers` threads (torch releases the GIL)."""
        scores: dict[str, dict[str, ChoiceScores]] = {}
        for name in self.members:
            cached = {i: ChoiceScores.model_validate(v) for i, v in self.cache.load(f"scores.{name}").items()}
            scores[name] = cached
            todo = [item for item in self.choice_items if item.id not in cached]
            step = step_for(f"scoring with {name}", len(self.choice_items))
            for _ in range(len(self.choice_items) - len(todo)):
                step()
            with ThreadPoolExecutor(max_workers=self.workers) as pool:
                jobs = [
                    pool.submit(self._score_member, name, todo[share :: self.workers], cached, step)
                    for share in range(self.workers)
                ]
                for job in jobs:
                    job.result()
        return scores

    def _score_member(
        self, name: str, items: list[ChoiceItem], into: dict[str, ChoiceScores], step: Callable[[], None]
    ) -> None:
        scored_items = score_items(
            self.members[name],
            items,
            batch_choices=self.batch_choices,
            with_prompt=self.needs_prompt_scores(),
        )
        for item, scored in scored_items:
            self.cache.append(f"scores.{name}", item.id, scored.model_dump())
            into[item.id] = scored
            step()

    def _loglik(
        self, target: Target, item: ChoiceItem, scores: dict[str, dict[str, ChoiceScores]]
    ) -> ItemResult:
        if target.is_single:
            member = target.spec.params["member"]
            mine = scores[member][item.id]
            pred = mine.prediction(self.norm)
            return ItemResult(
                id=item.id,
                strategy=target.label,
                protocol="loglik",
                correct=pred == item.gold,
                pred=pred,
                gold=item.gold,
                chosen=member,
                calls=1,
                tokens=mine.tokens,
                latency_s=mine.latency_s,
            )
        ensemble = ChoiceEnsemble(**target.spec.params)
        per_member = {name: member_scores[item.id] for name, member_scores in scores.items()}
        pred, weights, _ = ensemble.combine(per_member, self.norm)
        used = [per_member[n] for n in weights]
        return ItemResult(
            id=item.id,
            strategy=target.label,
            protocol="loglik",
            correct=pred == item.gold,
            pred=pred,
            gold=item.gold,
            calls=len(used),
            tokens=sum(s.tokens for s in used),
            latency_s=sum(s.latency_s for s in used),
            details={"weights": weights},
        )

    def _run_target(
        self, target: Target, scores: dict[str, dict[str, ChoiceScores]], step_for: ProgressFactory
    ) -> list[ItemResult]:
        key = f"{target.protocol}.{target.spec.slug}"
        cached = {i: ItemResult.model_validate(v) for i, v in self.cache.load(key).items()}
        ensemble = self._ensemble(target.spec)
        step = step_for(target.label, len(self.dataset.items))
        results = []
        for item in self.dataset.items:
            if item.id not in cached:
                if target.protocol == "routed":
                    assert isinstance(item, ChoiceItem)
                    cached[item.id] = self._routed(target, ensemble, item, scores)
                else:
                    cached[item.id] = self._generated(target, ensemble, item)
                self.cache.append(key, item.id, cached[item.id].model_dump())
            results.append(cached[item.id])
            step()
        return results

    def _routed(
        self, target: Target, ensemble: Ensemble, item: ChoiceItem, scores: dict[str, dict[str, ChoiceScores]]
    ) -> ItemResult:
        ctx = RunContext(ensemble.members, ensemble.strategy.name)
        request = request_for(item, default_max_tokens(item), self.seed)
        start = time.perf_counter()
        router = ensemble.strategy
        assert isinstance(router, Router)  # planned as "routed" because it is one
        decision = run_sync(router.aroute(ctx, request))
        route_s = time.perf_counter() - start
        chosen = decision.ranking[0]
        mine = scores[chosen][item.id]
        pred = mine.prediction(self.norm)
        return ItemResult(
            id=item.id,
            strategy=target.label,
            protocol="routed",
            correct=pred == item.gold,
            pred=pred,
            gold=item.gold,
            chosen=chosen,
            calls=len(ctx.trace.calls) + 1,
            tokens=ctx.trace.usage.total_tokens + mine.tokens,
            latency_s=route_s + mine.latency_s,
            details={"reason": decision.reason},
        )

    def _generated(self, target: Target, ensemble: Ensemble, item: Item) -> ItemResult:
        request = request_for(item, self.max_tokens or default_max_tokens(item), self.seed)
        start = time.perf_counter()
        try:
            result = run_sync(ensemble.arun_request(request))
        except EnsembleError as err:
            return ItemResult(
                id=item.id,
                strategy=target.label,
                protocol="generate",
                correct=False,
                gold=item.gold if isinstance(item, ChoiceItem) else None,
                latency_s=time.perf_counter() - start,
                error=f"{type(err).__name__}: {err}",
            )
        latency = time.perf_counter() - start
        if isinstance(item, ChoiceItem):
            pred = choice_from_text(item, result.text)
            correct = pred == item.gold
        else:
            assert isinstance(item, AnswerItem)
            pred, correct = None, answer_correct(item, result.text)
        return ItemResult(
            id=item.id,
            strategy=target.label,
            protocol="generate",
            correct=correct,
            pred=pred,
            gold=item.gold if isinstance(item, ChoiceItem) else None,
            text=result.text[:500],
            chosen=result.trace.chosen,
            calls=len(result.trace.calls),
            tokens=result.usage.total_tokens,
            latency_s=latency,
        )


def iter_results(path: Path) -> Iterator[ItemResult]:
    """Read a report's per-item JSONL back."""
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield ItemResult.model_validate_json(line)
