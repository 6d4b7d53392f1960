"""Combinations of the members' choice scores that are fitted on dev items and judged on test items.

Each one is a conditional logit over the choices of an item, P(choice) ∝ exp(w · x_choice), fitted by
maximum likelihood with an L2 penalty chosen by cross-validation on the dev items:
- "calibrated": one feature per member, its per-character log-likelihood; the fitted weight is the member's
  weight over its temperature, so this is the weighted, temperature-calibrated log-linear combination;
- "stacked": three features per member (per character, per token, and the raw sum), so the stacker also
  learns which length normalisation to trust for each member.
A single member's stacked logit gives its answer and its confidence (the probability of its top choice),
which cascades over choice scores escalate on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ensemble_core.errors import ConfigError
from ensemble_core.eval.choice_scoring import ChoiceScores

FeatureKind = Literal["calibrated", "stacked"]
L2_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0)


def choice_features(
    scores: Mapping[str, ChoiceScores], members: Sequence[str], kind: FeatureKind
) -> np.ndarray:
    """[choices, features] for one item from the named members' scores."""
    columns: list[list[float]] = []
    for name in members:
        s = scores[name]
        columns.append(s.normalised("chars"))
        if kind == "stacked":
            columns.append([lp / max(n, 1) for lp, n in zip(s.logprobs, s.n_tokens, strict=True)])
            columns.append(list(s.logprobs))
    return np.array(columns, dtype=np.float64).T


class ConditionalLogit(BaseModel):
    """P(choice) ∝ exp(w · (x_choice / scale)); `scale` standardises each feature's within-item spread."""

    model_config = ConfigDict(extra="forbid")

    weights: list[float]
    scale: list[float]
    l2: float = Field(ge=0.0)

    @classmethod
    def fit(cls, items: Sequence[np.ndarray], gold: Sequence[int], l2: float) -> ConditionalLogit:
        if not items:
            raise ConfigError("fitting a choice combination needs at least one dev item")
        spread = np.concatenate([x - x.mean(axis=0) for x in items])
        scale = spread.std(axis=0)
        scale[scale == 0] = 1.0
        x, mask = _stacked([x / scale for x in items])  # [items, choices, features], real choices
        w = _newton(x, mask, np.asarray(gold), l2)
        return cls(weights=w.tolist(), scale=scale.tolist(), l2=l2)

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        logits = (x / np.asarray(self.scale)) @ np.asarray(self.weights)
        logits -= logits.max()
        p = np.exp(logits)
        return p / p.sum()

    def predict(self, x: np.ndarray) -> int:
        return int(np.argmax(self.probabilities(x)))


def _newton(x: np.ndarray, mask: np.ndarray, gold: np.ndarray, l2: float, steps: int = 50) -> np.ndarray:
    """The penalised maximum-likelihood weights by Newton's method with a backtracking line search (the
    objective is convex and has a dozen parameters at most, so it converges in a few steps)."""
    rows = np.arange(len(x))
    chosen = x[rows, gold]

    def objective(w: np.ndarray) -> tuple[float, np.ndarray]:
        logits = np.where(mask, x @ w, -np.inf)
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        return float(-np.log(p[rows, gold] + 1e-300).mean() + l2 * w @ w), p

    w = np.zeros(x.shape[2])
    loss, p = objective(w)
    for _ in range(steps):
        mean = np.einsum("ic,icf->if", p, x)
        grad = -(chosen - mean).mean(axis=0) + 2 * l2 * w
        second = np.einsum("ic,icf,icg->fg", p, x, x) / len(x) - mean.T @ mean / len(x)
        step = np.linalg.solve(second + 2 * l2 * np.eye(len(w)) + 1e-9 * np.eye(len(w)), grad)
        size = 1.0
        while size > 1e-6:
            trial = w - size * step
            trial_loss, trial_p = objective(trial)
            if trial_loss <= loss:
                break
            size /= 2
        if size <= 1e-6 or loss - trial_loss < 1e-10:
            w, loss, p = (trial, trial_loss, trial_p) if trial_loss <= loss else (w, loss, p)
            break
        w, loss, p = trial, trial_loss, trial_p
    return w


def _stacked(items: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Items with different numbers of choices as one padded array, and the mask of real choices."""
    width = max(x.shape[0] for x in items)
    x = np.zeros((len(items), width, items[0].shape[1]))
    mask = np.zeros((len(items), width), dtype=bool)
    for i, item in enumerate(items):
        x[i, : len(item)] = item
        mask[i, : len(item)] = True
    return x, mask


def fit_cross_validated(
    items: Sequence[np.ndarray], gold: Sequence[int], *, folds: int = 5, seed: int = 0
) -> ConditionalLogit:
    """The conditional logit with the L2 penalty of `L2_GRID` that predicts held-out dev folds best (mean
    log-likelihood), refitted on all dev items."""
    order = np.random.default_rng(seed).permutation(len(items))
    parts = np.array_split(order, min(folds, len(items)))

    def held_out_loglik(l2: float) -> float:
        total = 0.0
        for part in parts:
            held = set(part.tolist())
            train = [i for i in range(len(items)) if i not in held]
            model = ConditionalLogit.fit([items[i] for i in train], [gold[i] for i in train], l2)
            total += sum(float(np.log(model.probabilities(items[i])[gold[i]] + 1e-300)) for i in held)
        return total

    best = max(L2_GRID, key=held_out_loglik)
    return ConditionalLogit.fit(items, gold, best)


class FittedCombination(BaseModel):
    """A choice combination fitted on dev items: which members, which features, and the logit."""

    model_config = ConfigDict(extra="forbid")

    members: list[str]
    kind: FeatureKind
    logit: ConditionalLogit

    @classmethod
    def fit(
        cls,
        dev: Sequence[Mapping[str, ChoiceScores]],
        gold: Sequence[int],
        members: Sequence[str],
        kind: FeatureKind,
        seed: int = 0,
    ) -> FittedCombination:
        features = [choice_features(s, members, kind) for s in dev]
        return cls(members=list(members), kind=kind, logit=fit_cross_validated(features, gold, seed=seed))

    def probabilities(self, scores: Mapping[str, ChoiceScores]) -> np.ndarray:
        return self.logit.probabilities(choice_features(scores, self.members, self.kind))

    def predict(self, scores: Mapping[str, ChoiceScores]) -> int:
        return int(np.argmax(self.probabilities(scores)))

    def confidence(self, scores: Mapping[str, ChoiceScores]) -> float:
        """The calibrated probability of the predicted choice."""
        return float(self.probabilities(scores).max())
