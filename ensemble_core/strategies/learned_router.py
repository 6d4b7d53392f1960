"""`LearnedRouter`: predicts each member's answer quality from the conversation's embedding, learned from
logged records, and picks the cheapest member whose predicted quality is close enough to the best.

The predictor is k-nearest-neighbours on unit embeddings (cosine), shrunk towards each member's mean quality:
    q_m(x) = (sum_i w_i quality_i[m] + s * mean[m]) / (sum_i w_i + s), w_i = max(cos(x, x_i), 0) over the k
    nearest, so a query far from every logged one falls back to the member's average, and predictions stay in
    the range of the logged qualities (probabilities when quality is 0/1 correctness). Decision rule: among
    the members whose predicted quality is at least (best predicted - `threshold`), the cheapest answers
    (ties: higher quality). A threshold of 0 always takes the best prediction; a larger one trades quality for
    cost. The cost of a member is its mean logged cost. `calibrate` picks the threshold for a target share of
    calls to the most expensive member or a cost budget per request. `save`/`load` write JSON and .npy arrays
    (no pickle).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from ensemble_core.asyncio_bridge import to_thread
from ensemble_core.errors import ConfigError
from ensemble_core.members.base import Member
from ensemble_core.run_context import RunContext
from ensemble_core.strategies.base import resolve_member
from ensemble_core.strategies.operating_point import OperatingPoint
from ensemble_core.strategies.routing import EmbeddingRouter, RoutingDecision
from ensemble_core.types import Message, MessagesLike, Request, to_messages

FORMAT_VERSION = 1
_SAVED_PARAMS = ("k", "prior_strength", "threshold", "recency_decay", "max_turns")


class RouterRecord(BaseModel):
    """One logged request: the conversation, and for each member the quality of its answer (e.g. 1/0 correct,
    or a judge's score in [0, 1]) and what the answer cost (money, seconds or tokens: any one unit for
    all)."""

    model_config = ConfigDict(extra="forbid")

    conversation: list[Message] = Field(description="the messages of the request (a string is one user turn)")
    quality: dict[str, float] = Field(min_length=1, description="member name -> quality of its answer")
    cost: dict[str, float] = Field(
        description="member name -> cost of its answer (same unit for every member)"
    )

    @field_validator("conversation", mode="before")
    @classmethod
    def _from_prompt(cls, value: MessagesLike) -> list[Message]:
        return to_messages(value)

    @model_validator(mode="after")
    def _same_members(self) -> RouterRecord:
        if set(self.cost) != set(self.quality):
            raise ValueError(
                f"quality names {sorted(self.quality)} but cost names {sorted(self.cost)}: give both for "
                "each member"
            )
        return self


class LearnedRouter(EmbeddingRouter):
    """Route to the cheapest member whose predicted quality is within `threshold` of the best predicted.
    Use: `router.fit(train_records)`, `router.calibrate(dev_records, target=0.3)`, `router.save(folder)`;
    later `LearnedRouter.load(folder)` or the config `{"strategy": "learned-router", "path": folder}`."""

    name: ClassVar[str] = "learned-router"
    summary: ClassVar[str] = (
        "predicts each member's quality from logged records; the cheapest good-enough answers"
    )
    members_doc: ClassVar[str] = "names of the members it may route to; default: the members it was fitted on"
    paper: ClassVar[str | None] = (
        "Ong et al. 2024, RouteLLM: Learning to Route LLMs with Preference Data (arXiv:2406.18665)"
    )

    path: str | None = Field(default=None, description="folder written by save(); loads the fitted router")
    k: int = Field(
        default=20, ge=1, description="neighbours (logged requests) that predict a query's quality"
    )
    prior_strength: float = Field(
        default=1.0,
        ge=0.0,
        description="weight of each member's mean quality against the neighbours' (shrinkage)",
    )
    threshold: float = Field(
        default=0.0, ge=0.0, description="quality a cheaper member may lose against the best prediction"
    )
    _members: list[str] = PrivateAttr(default_factory=list)
    _costs: np.ndarray | None = PrivateAttr(default=None)
    _embeddings: np.ndarray | None = PrivateAttr(default=None)
    _quality: np.ndarray | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _load_path(self) -> LearnedRouter:
        if self.path is not None:
            self._read(Path(self.path))
        return self

    # fitting
    # -------------------------------------------------------------------------------------------------
    @property
    def fitted(self) -> bool:
        return self._embeddings is not None

    @property
    def member_names(self) -> list[str]:
        """The members the router was fitted on, in column order."""
        return list(self._members)

    @property
    def costs(self) -> dict[str, float]:
        """Each member's mean logged cost."""
        return dict(zip(self._members, self._fitted()[0].tolist(), strict=True))

    def fit(self, records: Sequence[RouterRecord | dict[str, Any]]) -> LearnedRouter:
        """Learn from logged records (every record must name the same members); returns self."""
        records = _validated(records)
        members = list(records[0].quality)
        quality, costs = _matrices(records, members)
        self._members = members
        self._quality = quality
        self._costs = costs.mean(axis=0)
        self._embeddings = self.embed_conversations([r.conversation for r in records])
        return self

    def _fitted(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._embeddings is None or self._quality is None or self._costs is None:
            raise ConfigError(
                "learned-router is not fitted: call fit(records) first, or pass path= a folder written by "
                "save()"
            )
        return self._costs, self._embeddings, self._quality

    # prediction and decision
    # ---------------------------------------------------------------------------------
    def predict(self, conversations: Sequence[MessagesLike]) -> np.ndarray:
        """Predicted quality, shape [len(conversations), members] (columns in `member_names` order)."""
        return self._predict_vectors(self.embed_conversations([to_messages(c) for c in conversations]))

    def _predict_vectors(self, queries: np.ndarray) -> np.ndarray:
        _, embeddings, quality = self._fitted()
        if queries.shape[1] != embeddings.shape[1]:
            raise ConfigError(
                f"learned-router was fitted on {embeddings.shape[1]}-dimensional embeddings but the "
                f"embedding function gives {queries.shape[1]}: pass the embedding function it was fitted with"
            )
        similarity = queries @ embeddings.T
        k = min(self.k, similarity.shape[1])
        nearest = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
        weights = np.clip(np.take_along_axis(similarity, nearest, axis=1), 0.0, None)
        neighbour_quality = quality[nearest]  # [queries, k, members]
        prior = quality.mean(axis=0)
        numerator = np.einsum("qk,qkm->qm", weights, neighbour_quality) + self.prior_strength * prior
        denominator = weights.sum(axis=1, keepdims=True) + self.prior_strength
        return numerator / np.where(denominator == 0, 1.0, denominator)

    def choose(self, predicted: np.ndarray, threshold: float | None = None) -> np.ndarray:
        """Column of the chosen member for each row of predicted qualities: the cheapest within `threshold` of
        the row's best (ties: the higher prediction)."""
        costs = self._fitted()[0]
        tolerance = self.threshold if threshold is None else threshold
        admissible = predicted >= predicted.max(axis=1, keepdims=True) - tolerance - 1e-12
        # Rank by cost, then by predicted quality: lexsort's last key is the primary one.
        order = np.lexsort((-predicted, np.broadcast_to(costs, predicted.shape), ~admissible), axis=1)
        return order[:, 0]

    async def aroute(self, ctx: RunContext, request: Request) -> RoutingDecision:
        predicted = (await to_thread(self.predict, [request.messages]))[0]
        chosen = self.choose(predicted[None, :])[0]
        scores = dict(zip(self._members, predicted.tolist(), strict=True))
        others = sorted((n for n in self._members if n != self._members[chosen]), key=lambda n: -scores[n])
        best = max(scores, key=scores.__getitem__)
        name = self._members[chosen]
        reason = (
            f"{name!r} has the best predicted quality ({scores[name]:.3f})"
            if name == best
            else f"{name!r} is the cheapest within threshold {self.threshold:.3f} of the best predicted "
            f"({best!r} {scores[best]:.3f} vs {scores[name]:.3f})"
        )
        return RoutingDecision(
            ranking=[name, *others],
            reason=reason,
            score_name="predicted_quality",
            scores=scores,
            details={"threshold": self.threshold, "costs": self.costs},
        )

    def default_participants(self, members: Sequence[Member]) -> list[Member]:
        self._fitted()
        return [resolve_member(members, name, "learned-router (fitted members)") for name in self._members]

    # calibration
    # ---------------------------------------------------------------------------------------------
    def curve(
        self, records: Sequence[RouterRecord | dict[str, Any]], thresholds: Sequence[float] | None = None
    ) -> list[OperatingPoint]:
        """Quality, cost and share of expensive calls on `records` (held out from fit) at each threshold;
        default thresholds: every distinct gap between a member's prediction and the best, and 0."""
        records = _validated(records)
        quality, costs = _matrices(records, self._members)
        predicted = self.predict([r.conversation for r in records])
        levels = _candidate_thresholds(predicted).tolist() if thresholds is None else list(thresholds)
        expensive = int(np.argmax(self._fitted()[0]))
        rows = np.arange(len(records))
        points = []
        for threshold in levels:
            chosen = self.choose(predicted, threshold)
            shares = np.bincount(chosen, minlength=len(self._members)) / len(records)
            points.append(
                OperatingPoint(
                    thresholds=[float(threshold)],
                    quality=float(quality[rows, chosen].mean()),
                    cost=float(costs[rows, chosen].mean()),
                    expensive_share=float(shares[expensive]),
                    shares=dict(zip(self._members, shares.tolist(), strict=True)),
                )
            )
        return points

    def operating_point(
        self,
        records: Sequence[RouterRecord | dict[str, Any]],
        target: float,
        metric: Literal["expensive_share", "cost"] = "expensive_share",
    ) -> OperatingPoint:
        """The most quality-seeking point (smallest threshold) whose share of calls to the most expensive
        member (`metric="expensive_share"`) or mean cost per request (`metric="cost"`) on `records` is at
        most `target`. Use records held out from `fit`."""
        points = self.curve(records)
        measure = {"expensive_share": lambda p: p.expensive_share, "cost": lambda p: p.cost}[metric]
        feasible = [p for p in points if measure(p) <= target + 1e-12]
        if not feasible:
            lowest = min(measure(p) for p in points)
            raise ConfigError(
                f"learned-router cannot reach {metric} <= {target} on these records (the lowest is "
                f"{lowest:.4g}, always routing to the cheapest): raise the target"
            )
        return min(feasible, key=lambda p: p.thresholds[0])

    def calibrate(
        self,
        records: Sequence[RouterRecord | dict[str, Any]],
        target: float,
        metric: Literal["expensive_share", "cost"] = "expensive_share",
    ) -> LearnedRouter:
        """A copy (fitted the same) with the threshold of `operating_point(records, target, metric)`."""
        point = self.operating_point(records, target, metric)
        return self.model_copy(update={"threshold": point.thresholds[0]})

    # persistence
    # ---------------------------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """Write router.json (members, costs, parameters) and embeddings.npy / quality.npy into `folder`."""
        costs, embeddings, quality = self._fitted()
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        meta = {
            "format_version": FORMAT_VERSION,
            "members": self._members,
            "costs": costs.tolist(),
            "params": {name: getattr(self, name) for name in _SAVED_PARAMS},
        }
        (folder / "router.json").write_text(json.dumps(meta, indent=2))
        np.save(folder / "embeddings.npy", embeddings, allow_pickle=False)
        np.save(folder / "quality.npy", quality, allow_pickle=False)
        return folder

    @classmethod
    def load(cls, folder: str | Path, **params: Any) -> LearnedRouter:
        """A router saved by `save`; `params` (e.g. embed=, threshold=) override the saved ones."""
        router = cls(**params)
        router._read(Path(folder))
        router.path = str(folder)
        return router

    def _read(self, folder: Path) -> None:
        meta_path = folder / "router.json"
        if not meta_path.is_file():
            raise ConfigError(f"learned-router: {meta_path} does not exist; pass a folder written by save()")
        meta = json.loads(meta_path.read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise ConfigError(
                f"learned-router: {meta_path} has format_version {meta.get('format_version')!r}; this "
                f"version reads {FORMAT_VERSION}: fit and save the router again"
            )
        for name, value in meta["params"].items():
            if name in _SAVED_PARAMS and name not in self.model_fields_set:
                setattr(self, name, value)
        self._members = list(meta["members"])
        self._costs = np.asarray(meta["costs"], dtype=np.float64)
        self._embeddings = np.load(folder / "embeddings.npy", allow_pickle=False)
        self._quality = np.load(folder / "quality.npy", allow_pickle=False)


def _validated(records: Sequence[RouterRecord | dict[str, Any]]) -> list[RouterRecord]:
    if not records:
        raise ConfigError("learned-router needs at least one record")
    return [r if isinstance(r, RouterRecord) else RouterRecord.model_validate(r) for r in records]


def _matrices(records: Sequence[RouterRecord], members: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Quality and cost as [records, members] arrays; a record that lacks a member is an error naming both."""
    for i, record in enumerate(records):
        if set(record.quality) != set(members):
            raise ConfigError(
                f"record {i} names members {sorted(record.quality)} but the router's are {sorted(members)}: "
                "every record needs the quality and cost of every member"
            )
    quality = np.array([[r.quality[m] for m in members] for r in records], dtype=np.float64)
    costs = np.array([[r.cost[m] for m in members] for r in records], dtype=np.float64)
    return quality, costs


def _candidate_thresholds(predicted: np.ndarray, limit: int = 512) -> np.ndarray:
    """0 and every gap between a prediction and its row's best (at most `limit`, by quantile)."""
    gaps = np.unique(np.concatenate([[0.0], (predicted.max(axis=1, keepdims=True) - predicted).ravel()]))
    if len(gaps) > limit:
        gaps = np.unique(np.quantile(gaps, np.linspace(0.0, 1.0, limit)))
    return gaps
