"""Cascade thresholds from a dev set: per-member records (confidence, quality, cost) are replayed under every
threshold setting on a grid, giving the quality-cost frontier; calibration picks a point on it for a target
quality or a budget. Cost is money (Member.price) or latency, so a budget can be stated in either."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ensemble_core.errors import ConfigError
from ensemble_core.strategies.operating_point import OperatingPoint

CostKind = Literal["auto", "money", "latency", "cpu"]
"""money: Member.price per token; latency: seconds of wall time; cpu: CPU seconds (where members measure
them; steady on a shared machine, unlike wall time); auto: money when any record cost money, else
latency (local models cost nothing but time)."""


class MemberOutcome(BaseModel):
    """One member's answer to one dev question: its confidence score (None when not scored or failed), its
    quality (1/0 for right/wrong, or a graded value), and what it cost, scoring calls included."""

    model_config = ConfigDict(extra="forbid")
    score: float | None = None
    quality: float = Field(ge=0.0)
    cost: float = Field(default=0.0, ge=0.0)
    latency_s: float = Field(default=0.0, ge=0.0)
    cpu_s: float = Field(default=0.0, ge=0.0)


class CascadeRecord(BaseModel):
    """Every member's outcome on one dev question, by member name."""

    model_config = ConfigDict(extra="forbid")
    outcomes: dict[str, MemberOutcome]


def _matrices(
    records: Sequence[CascadeRecord], order: Sequence[str], cost: CostKind
) -> tuple[np.ndarray, ...]:
    missing = sorted({name for r in records for name in order if name not in r.outcomes})
    if missing:
        raise ConfigError(f"calibration records lack outcomes for member(s) {missing}; record every member")
    outcomes = [[r.outcomes[name] for name in order] for r in records]
    scores = np.array([[np.nan if o.score is None else o.score for o in row] for row in outcomes])
    quality = np.array([[o.quality for o in row] for row in outcomes])
    if cost == "auto":
        cost = "money" if any(o.cost > 0 for row in outcomes for o in row) else "latency"
    measure = {"money": lambda o: o.cost, "latency": lambda o: o.latency_s, "cpu": lambda o: o.cpu_s}[cost]
    spent = np.array([[measure(o) for o in row] for row in outcomes])
    return scores, quality, np.cumsum(spent, axis=1)


def replay(scores: np.ndarray, quality: np.ndarray, cumulative_cost: np.ndarray, thresholds: Sequence[float]):
    """Which member answers each record under `thresholds`, and the resulting quality and cost per record."""
    n_records, n_members = quality.shape
    stop = np.full(n_records, n_members - 1)
    for step in reversed(range(n_members - 1)):
        accepted = np.nan_to_num(scores[:, step], nan=-np.inf) >= thresholds[step]
        stop = np.where(accepted, step, stop)
    rows = np.arange(n_records)
    return stop, quality[rows, stop], cumulative_cost[rows, stop]


def _grid(scores: np.ndarray, size: int) -> list[float]:
    """Candidate thresholds for one step: score quantiles, plus one above every score (always escalate)."""
    seen = scores[~np.isnan(scores)]
    if seen.size == 0:
        return [0.0]
    values = np.unique(np.quantile(seen, np.linspace(0, 1, size)))
    return [*map(float, values), float(seen.max()) + 1.0]


def frontier(
    records: Sequence[CascadeRecord], order: Sequence[str], cost: CostKind, grid: int
) -> list[OperatingPoint]:
    """Pareto-optimal threshold settings (no other is both cheaper and better), cheapest first."""
    if not records:
        raise ConfigError("calibration needs at least one record")
    scores, quality, cumulative = _matrices(records, order, cost)
    points = []
    for thresholds in itertools.product(*(_grid(scores[:, s], grid) for s in range(len(order) - 1))):
        stop, q, c = replay(scores, quality, cumulative, thresholds)
        share = np.bincount(stop, minlength=len(order)) / len(records)
        points.append(
            OperatingPoint(
                thresholds=list(thresholds),
                quality=float(q.mean()),
                cost=float(c.mean()),
                shares={name: float(s) for name, s in zip(order, share, strict=True)},
            )
        )
    points.sort(key=lambda p: (p.cost, -p.quality))
    best: list[OperatingPoint] = []
    for point in points:
        if not best or point.quality > best[-1].quality:
            best.append(point)
    return best


def choose_point(
    curve: Sequence[OperatingPoint], *, target_quality: float | None = None, budget: float | None = None
) -> OperatingPoint:
    """The cheapest point reaching `target_quality`, or the best point within `budget` (give exactly one)."""
    if (target_quality is None) == (budget is None):
        raise ConfigError("calibrate: give exactly one of target_quality= or budget=")
    if target_quality is not None:
        reaching = [p for p in curve if p.quality >= target_quality]
        if not reaching:
            raise ConfigError(
                f"no thresholds reach quality {target_quality} on these records; the best is "
                f"{curve[-1].quality:.4g} (at cost {curve[-1].cost:.4g}): lower the target"
            )
        return reaching[0]
    assert budget is not None  # exactly one of the two is given (checked above)
    within = [p for p in curve if p.cost <= budget * (1 + 1e-9)]  # mean costs carry rounding error
    if not within:
        raise ConfigError(
            f"no thresholds fit a budget of {budget} per request; the cheapest costs {curve[0].cost:.4g}: "
            "raise the budget"
        )
    return within[-1]
