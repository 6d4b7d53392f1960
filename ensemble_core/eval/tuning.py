"""Tuning on dev items, judging on test items, from the members' cached results.

Every method is fitted (weights, calibration, thresholds, a router) on the dev items of a fixed split and
scored once on the disjoint test items; nothing about the test items reaches a fit. Multiple-choice sets
are tuned from the members' choice scores (`tune_choices`); short-answer sets from the members' answers
and their confidence scores (`eval.answer_records`, `tune_answers`).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ensemble_core.eval.answer_records import AnswerRecord
from ensemble_core.eval.choice_methods import FeatureKind, FittedCombination
from ensemble_core.eval.choice_scoring import ChoiceScores
from ensemble_core.eval.items import ChoiceItem
from ensemble_core.eval.metrics import first_line
from ensemble_core.scoring.answers import normalise_text
from ensemble_core.scoring.embeddings import EmbedFn
from ensemble_core.strategies.cascade_calibration import CascadeRecord, MemberOutcome, frontier, replay
from ensemble_core.strategies.operating_point import OperatingPoint

Family = Literal["single", "tuned-single", "ensemble", "cascade", "router"]
MemberScores = dict[str, ChoiceScores]


class TunedMethod(BaseModel):
    """One method's dev fit and test result: per-item correctness and CPU seconds on the test items."""

    model_config = ConfigDict(extra="forbid")

    label: str
    family: Family
    members: list[str]
    dev_accuracy: float
    dev_cost: float = Field(description="mean CPU seconds per dev item")
    test_correct: list[bool]
    test_cost: list[float]
    strategy: dict[str, Any] | None = Field(
        default=None, description="the registered strategy that runs it at generation time, as a config"
    )
    details: dict[str, Any] = Field(default_factory=dict)

    @property
    def test_accuracy(self) -> float:
        return sum(self.test_correct) / max(len(self.test_correct), 1)

    @property
    def test_cost_mean(self) -> float:
        return float(np.mean(self.test_cost)) if self.test_cost else 0.0


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else 0.0


def _evaluate(
    items: Sequence[ChoiceItem],
    scores: Sequence[MemberScores],
    predict: Callable[[MemberScores], tuple[int, float]],
) -> tuple[list[bool], list[float]]:
    """Per item: whether `predict`'s choice is right, and the CPU seconds it says it spent."""
    correct, cost = [], []
    for item, s in zip(items, scores, strict=True):
        choice, spent = predict(s)
        correct.append(choice == item.gold)
        cost.append(spent)
    return correct, cost


def tune_choices(
    dev: Sequence[ChoiceItem],
    test: Sequence[ChoiceItem],
    scores: Mapping[str, Mapping[str, ChoiceScores]],
    members: Sequence[str],
    seed: int = 0,
    embed: EmbedFn | None = None,
) -> list[TunedMethod]:
    """Every member alone, raw and stacked on its own features (so an ensemble's gain over the best member is
    told apart from what one member gains by tuning its length normalisation), the uniform choice-ensemble,
    calibrated (positive weights), contrastive (the best calibrated fit, when it subtracts a member) and
    stacked combinations (their members chosen on dev), and cascades (escalating on each
    member's fitted confidence, thresholds fitted on dev) and the learned router over the members in the
    form chosen for each on dev (calibrated or stacked alone), each judged on test."""
    dev_scores = [{m: scores[m][item.id] for m in members} for item in dev]
    test_scores = [{m: scores[m][item.id] for m in members} for item in test]
    dev_gold = [item.gold for item in dev]
    methods: list[TunedMethod] = []

    def add(label: str, family: Family, used: Sequence[str], predict, **extra: Any) -> TunedMethod:
        dev_correct, dev_cost = _evaluate(dev, dev_scores, predict)
        test_correct, test_cost = _evaluate(test, test_scores, predict)
        method = TunedMethod(
            label=label,
            family=family,
            members=list(used),
            dev_accuracy=_mean(dev_correct),
            dev_cost=_mean(dev_cost),
            test_correct=test_correct,
            test_cost=test_cost,
            **extra,
        )
        methods.append(method)
        return method

    def cost_of(used: Sequence[str]) -> Callable[[MemberScores], float]:
        return lambda s: sum(s[m].cpu_s for m in used)

    for m in members:
        add(
            f"single:{m}",
            "single",
            [m],
            lambda s, m=m: (s[m].prediction("chars"), s[m].cpu_s),
            strategy={"name": "single", "params": {"members": [m]}},
        )
    alone = {m: FittedCombination.fit(dev_scores, dev_gold, [m], "stacked", seed) for m in members}
    for m, fitted in alone.items():
        add(
            f"stacked alone:{m}",
            "tuned-single",
            [m],
            lambda s, f=fitted, m=m: (f.predict(s), s[m].cpu_s),
            details={"weights": dict(zip(_feature_names(fitted), fitted.logit.weights, strict=True))},
        )
    every = cost_of(members)
    add(
        "choice-ensemble (uniform)",
        "ensemble",
        members,
        lambda s: (_uniform(s, members), every(s)),
    )
    calibrated = _ranked_subsets(dev_scores, dev_gold, members, "calibrated", seed)
    combinations = {
        "calibrated": next((f for f in calibrated if min(f.logit.weights) > 0), None),
        "contrastive": calibrated[0] if min(calibrated[0].logit.weights) <= 0 else None,
        "stacked": _ranked_subsets(dev_scores, dev_gold, members, "stacked", seed)[0],
    }
    for name, combined in combinations.items():
        if combined is None:
            continue
        spend = cost_of(combined.members)
        add(
            f"choice-ensemble ({name}: {'+'.join(combined.members)})",
            "ensemble",
            combined.members,
            lambda s, f=combined, spend=spend: (f.predict(s), spend(s)),
            details={"weights": dict(zip(_feature_names(combined), combined.logit.weights, strict=True))},
            strategy=_deployed(name, combined),
        )
    forms = {m: _member_form(dev_scores, dev_gold, alone[m], seed) for m in members}
    for order in _cascade_orders(members, dev_scores):
        methods.extend(_cascades(order, forms, dev, test, dev_scores, test_scores))

    def rows(items: Sequence[ChoiceItem], scores: Sequence[MemberScores]):
        return [
            (
                item.question,
                {m: forms[m].predict(s) == item.gold for m in members},
                {m: s[m].cpu_s for m in members},
            )
            for item, s in zip(items, scores, strict=True)
        ]

    methods.extend(routed(rows(dev, dev_scores), rows(test, test_scores), members, embed))
    return methods


def _uniform(s: MemberScores, members: Sequence[str]) -> int:
    totals = np.sum([s[m].normalised("chars") for m in members], axis=0)
    return int(np.argmax(totals))


def _feature_names(fitted: FittedCombination) -> list[str]:
    per = ["per-char"] if fitted.kind == "calibrated" else ["per-char", "per-token", "sum"]
    return [f"{m} {p}" for m in fitted.members for p in per]


def _deployed(name: str, fitted: FittedCombination) -> dict[str, Any] | None:
    """The strategy that runs a fitted combination at generation time, or None (stacking has none)."""
    if name == "calibrated":
        return _fusion_config(fitted)
    if name == "contrastive":
        return _contrastive_config(fitted)
    return None


def _per_char_weights(fitted: FittedCombination) -> dict[str, float]:
    """Each member's weight on its per-character log-likelihood (the fitted weight over the feature's
    scale)."""
    return {
        m: w / s for m, w, s in zip(fitted.members, fitted.logit.weights, fitted.logit.scale, strict=True)
    }


def _contrastive_config(fitted: FittedCombination) -> dict[str, Any] | None:
    """The signed fit as contrastive decoding: w_e log p_e - sum_a |w_a| log p_a ranks choices as
    (1 + beta) log p_e - beta sum_a share_a log p_a with beta = sum |w_a| / (w_e - sum |w_a|). None when more
    than one member is added, or the subtracted weights outweigh the expert's (no beta gives that ranking)."""
    raw = _per_char_weights(fitted)
    experts = [m for m, w in raw.items() if w > 0]
    amateurs = {m: -w for m, w in raw.items() if w < 0}
    subtracted = sum(amateurs.values())
    if len(experts) != 1 or not amateurs or raw[experts[0]] <= subtracted:
        return None
    beta = subtracted / (raw[experts[0]] - subtracted)
    return {
        "name": "contrastive",
        "params": {
            "members": list(amateurs),
            "expert": experts[0],
            "beta": round(beta, 4),
            "shares": {m: round(w / subtracted, 4) for m, w in amateurs.items()},
        },
    }


def _fusion_config(fitted: FittedCombination) -> dict[str, Any]:
    """The same log-linear weights at generation time: token fusion mixing log-probabilities (every weight is
    positive: the calibrated row is chosen among positive fits)."""
    raw = _per_char_weights(fitted)
    total = sum(raw.values())
    weights = {m: round(w / total, 4) for m, w in raw.items()}
    return {
        "name": "token-fusion",
        "params": {"members": fitted.members, "weights": weights, "mixing": "logit"},
    }


def _cross_validated_accuracy(
    dev: Sequence[MemberScores], gold: Sequence[int], subset: Sequence[str], kind: FeatureKind, seed: int
) -> float:
    """Dev accuracy when each of five folds is predicted by the combination fitted on the other four."""
    right = 0
    for fold in np.array_split(np.random.default_rng(seed).permutation(len(dev)), 5):
        held = set(fold.tolist())
        train = [i for i in range(len(dev)) if i not in held]
        fitted = FittedCombination.fit([dev[i] for i in train], [gold[i] for i in train], subset, kind, seed)
        right += sum(fitted.predict(dev[i]) == gold[i] for i in held)
    return right / len(dev)


def _ranked_subsets(
    dev: Sequence[MemberScores], gold: Sequence[int], members: Sequence[str], kind: FeatureKind, seed: int
) -> list[FittedCombination]:
    """The combination of every subset (two members or more) fitted on dev, best dev accuracy first, each
    subset judged with folds fitted on the other dev items (so the choice of subset sees no test item either).

    Token fusion, which runs a calibrated fit at generation time, mixes distributions and cannot subtract a
    member's scores, so the calibrated row takes the best fit whose weights are all positive, and a better
    one that subtracts a member (a "contrastive" fit, run at generation time by contrastive decoding) is
    reported apart."""
    subsets = [list(c) for k in range(2, len(members) + 1) for c in itertools.combinations(members, k)]
    ranked = sorted(
        subsets, key=lambda subset: _cross_validated_accuracy(dev, gold, subset, kind, seed), reverse=True
    )
    return [FittedCombination.fit(dev, gold, subset, kind, seed) for subset in ranked]


def _member_form(
    dev: Sequence[MemberScores], gold: Sequence[int], stacked: FittedCombination, seed: int
) -> FittedCombination:
    """A member as cascades and the router use it: calibrated on its per-character score alone, or
    `stacked` (its fit on its three length normalisations), whichever predicts held-out dev folds better
    (stacking can lose)."""
    kinds: tuple[FeatureKind, ...] = ("calibrated", "stacked")
    kind = max(kinds, key=lambda k: _cross_validated_accuracy(dev, gold, stacked.members, k, seed))
    return stacked if kind == "stacked" else FittedCombination.fit(dev, gold, stacked.members, kind, seed)


def _cascade_orders(members: Sequence[str], dev: Sequence[MemberScores]) -> list[list[str]]:
    """Cheap-to-expensive chains ending in the most expensive member: each cheaper member before it alone,
    and all of them in order of mean CPU cost."""
    by_cost = sorted(members, key=lambda m: _mean([s[m].cpu_s for s in dev]))
    top = by_cost[-1]
    chains = [[m, top] for m in by_cost[:-1]]
    if len(by_cost) > 2:
        chains.append(by_cost)
    return chains


def _cascades(
    order: list[str],
    forms: Mapping[str, FittedCombination],
    dev: Sequence[ChoiceItem],
    test: Sequence[ChoiceItem],
    dev_scores: Sequence[MemberScores],
    test_scores: Sequence[MemberScores],
) -> list[TunedMethod]:
    """The cascade along `order` at the cheapest dev thresholds that stay within one point of the last
    member's dev accuracy, and at every other dev-frontier point (for the curve). Each member answers in
    its form chosen on dev (`forms`: calibrated or stacked alone), and its confidence is that fit's
    probability of its answer (raw per-character scores cost the members 8 to 23 points on openbookqa)."""

    def records(items: Sequence[ChoiceItem], scores: Sequence[MemberScores]) -> list[CascadeRecord]:
        return [
            CascadeRecord(
                outcomes={
                    m: MemberOutcome(
                        score=forms[m].confidence(s),
                        quality=float(forms[m].predict(s) == item.gold),
                        cost=s[m].cpu_s,
                    )
                    for m in order
                }
            )
            for item, s in zip(items, scores, strict=True)
        ]

    dev_records, test_records = records(dev, dev_scores), records(test, test_scores)
    curve = frontier(dev_records, order, cost="money", grid=41)
    target = _mean([r.outcomes[order[-1]].quality for r in dev_records]) - 0.01
    chosen = next((p for p in curve if p.quality >= target), curve[-1])
    out = []
    for point in curve:
        correct, cost = _replayed(test_records, order, point.thresholds)
        label = f"cascade {'→'.join(order)}"
        out.append(
            TunedMethod(
                label=label if point is chosen else f"{label} @ {point.thresholds}",
                family="cascade",
                members=order,
                dev_accuracy=point.quality,
                dev_cost=point.cost,
                test_correct=correct,
                test_cost=cost,
                details={
                    "thresholds": point.thresholds,
                    "dev_shares": point.shares,
                    "chosen": point is chosen,
                    "target": f"within 1 point of {order[-1]} ({forms[order[-1]].kind}) on dev",
                    "forms": {m: forms[m].kind for m in order},
                },
            )
        )
    return out


def _replayed(
    records: Sequence[CascadeRecord], order: Sequence[str], thresholds: Sequence[float]
) -> tuple[list[bool], list[float]]:
    scores = np.array(
        [[np.nan if r.outcomes[m].score is None else r.outcomes[m].score for m in order] for r in records]
    )
    quality = np.array([[r.outcomes[m].quality for m in order] for r in records])
    cumulative = np.cumsum(np.array([[r.outcomes[m].cost for m in order] for r in records]), axis=1)
    _, q, c = replay(scores, quality, cumulative, thresholds)
    return [bool(x) for x in q], [float(x) for x in c]


AnswerScorer = Literal["mean-logprob", "self-verify", "verify-by-strongest", "peer-agreement"]


def tune_answers(
    dev: Sequence[str],
    test: Sequence[str],
    records: Mapping[str, AnswerRecord],
    members: Sequence[str],
    questions: Mapping[str, str],
    embed: EmbedFn | None = None,
) -> list[TunedMethod]:
    """Every member alone, a majority vote of all, and two-step cascades from each cheaper member to the
    strongest on each confidence score (thresholds fitted on dev to stay within one point of the strongest
    member's dev accuracy, at the lowest dev cost), each judged on test."""
    methods: list[TunedMethod] = []
    strongest = members[-1]

    def singles(m: str, ids: Sequence[str]) -> tuple[list[bool], list[float]]:
        return [records[i].answers[m].correct for i in ids], [records[i].answers[m].cpu_s for i in ids]

    for m in members:
        dev_correct, dev_cost = singles(m, dev)
        test_correct, test_cost = singles(m, test)
        methods.append(
            TunedMethod(
                label=f"single:{m}",
                family="single",
                members=[m],
                dev_accuracy=_mean(dev_correct),
                dev_cost=_mean(dev_cost),
                test_correct=test_correct,
                test_cost=test_cost,
                strategy={"name": "single", "params": {"members": [m]}},
            )
        )
    methods.append(_vote(dev, test, records, members))

    def rows(ids: Sequence[str]):
        return [
            (
                questions[i],
                {m: records[i].answers[m].correct for m in members},
                {m: records[i].answers[m].cpu_s for m in members},
            )
            for i in ids
        ]

    methods.extend(routed(rows(dev), rows(test), members, embed))
    target = next(m for m in methods if m.label == f"single:{strongest}").dev_accuracy - 0.01
    for cheap in members[:-1]:
        for scorer in ("mean-logprob", "self-verify", "verify-by-strongest", "peer-agreement"):
            peers = [p for p in members[:-1] if p != cheap]
            if scorer == "peer-agreement" and not peers:
                continue
            built = _answer_cascade(cheap, strongest, scorer, peers[:1], dev, test, records, target)
            if built is not None:
                methods.extend(built)
    return methods


def _vote(
    dev: Sequence[str], test: Sequence[str], records: Mapping[str, AnswerRecord], members: Sequence[str]
) -> TunedMethod:
    """Majority over the members' normalised answers (ties to the strongest member's answer)."""

    def run(ids: Sequence[str]) -> tuple[list[bool], list[float]]:
        correct, cost = [], []
        for i in ids:
            answers = records[i].answers
            keys = {m: normalise_text(first_line(answers[m].text)) for m in members}
            counts: dict[str, int] = {}
            for key in keys.values():
                counts[key] = counts.get(key, 0) + 1
            best = max(reversed(members), key=lambda m: counts[keys[m]])
            correct.append(answers[best].correct)
            cost.append(sum(answers[m].cpu_s for m in members))
        return correct, cost

    dev_correct, dev_cost = run(dev)
    test_correct, test_cost = run(test)
    return TunedMethod(
        label=f"vote ({'+'.join(members)})",
        family="ensemble",
        members=list(members),
        dev_accuracy=_mean(dev_correct),
        dev_cost=_mean(dev_cost),
        test_correct=test_correct,
        test_cost=test_cost,
        strategy={"name": "vote", "params": {"members": list(members), "normaliser": "text"}},
    )


def _answer_cascade(
    cheap: str,
    strongest: str,
    scorer: AnswerScorer,
    peers: Sequence[str],
    dev: Sequence[str],
    test: Sequence[str],
    records: Mapping[str, AnswerRecord],
    target: float,
) -> list[TunedMethod] | None:
    """The cascade cheap → strongest on one confidence score, at the chosen dev point and along the dev
    frontier; None when the records lack that score."""

    def record(i: str) -> CascadeRecord | None:
        r = records[i]
        first, last = r.answers[cheap], r.answers[strongest]
        extra = 0.0
        if scorer == "mean-logprob":
            score = first.mean_logprob
        elif scorer in ("self-verify", "verify-by-strongest"):
            key = f"{cheap if scorer == 'self-verify' else strongest}>{cheap}"
            if key not in r.verified:
                return None
            score, extra = r.verified[key].p_yes, r.verified[key].cpu_s
        else:
            agree = [
                normalise_text(first_line(r.answers[p].text)) == normalise_text(first_line(first.text))
                for p in peers
            ]
            score, extra = sum(agree) / len(agree), sum(r.answers[p].cpu_s for p in peers)
        return CascadeRecord(
            outcomes={
                cheap: MemberOutcome(score=score, quality=float(first.correct), cost=first.cpu_s + extra),
                strongest: MemberOutcome(quality=float(last.correct), cost=last.cpu_s),
            }
        )

    dev_records = [record(i) for i in dev]
    test_records = [record(i) for i in test]
    if any(r is None for r in [*dev_records, *test_records]):
        return None
    order = [cheap, strongest]
    curve = frontier([r for r in dev_records if r], order, cost="money", grid=41)
    chosen = next((p for p in curve if p.quality >= target), curve[-1])
    with_peers = f" with {'+'.join(peers)}" if scorer == "peer-agreement" else ""
    label = f"cascade {cheap}→{strongest} ({scorer}{with_peers})"
    out = []
    for point in curve:
        correct, cost = _replayed([r for r in test_records if r], order, point.thresholds)
        out.append(
            TunedMethod(
                label=label if point is chosen else f"{label} @ {point.thresholds}",
                family="cascade",
                members=[cheap, *peers, strongest] if scorer == "peer-agreement" else order,
                dev_accuracy=point.quality,
                dev_cost=point.cost,
                test_correct=correct,
                test_cost=cost,
                strategy=_cascade_config(cheap, strongest, scorer, peers, point.thresholds)
                if point is chosen
                else None,
                details={
                    "thresholds": point.thresholds,
                    "dev_shares": point.shares,
                    "chosen": point is chosen,
                },
            )
        )
    return out


def _cascade_config(
    cheap: str, strongest: str, scorer: AnswerScorer, peers: Sequence[str], thresholds: Sequence[float]
) -> dict[str, Any]:
    """The registered cascade that runs this at generation time."""
    kinds: dict[str, dict[str, Any]] = {
        "mean-logprob": {"kind": "mean-logprob"},
        "self-verify": {"kind": "self-verify"},
        "verify-by-strongest": {"kind": "self-verify", "verifier": strongest},
        "peer-agreement": {"kind": "peer-agreement", "peers": list(peers)},
    }
    kind = kinds[scorer]
    return {
        "name": "cascade",
        "params": {"members": [cheap, strongest], "scorer": kind, "thresholds": list(thresholds)},
    }


def routed(
    dev: Sequence[tuple[str, dict[str, bool], dict[str, float]]],
    test: Sequence[tuple[str, dict[str, bool], dict[str, float]]],
    members: Sequence[str],
    embed: EmbedFn | None = None,
) -> list[TunedMethod]:
    """`learned-router` fitted on the dev questions (each member's correctness and CPU seconds), at its
    quality-seeking threshold and at the cheapest threshold within one point of its best dev accuracy, both
    read from the out-of-fold dev curve; each (question, correct per member, CPU s per member) of test is
    routed by the question alone."""
    from ensemble_core.strategies.learned_router import LearnedRouter, RouterRecord

    def records(rows: Sequence[tuple[str, dict[str, bool], dict[str, float]]]) -> list[RouterRecord]:
        return [
            RouterRecord(
                conversation=q, quality={m: float(c[m]) for m in members}, cost={m: s[m] for m in members}
            )
            for q, c, s in rows
        ]

    dev_records = records(dev)
    router = LearnedRouter(embed=embed).fit(dev_records)
    test_predicted = router.predict([q for q, _, _ in test])
    curve = _out_of_fold_curve(dev_records, embed)
    best = max(p.quality for p in curve)
    cheap = min((p for p in curve if p.quality >= best - 0.01), key=lambda p: p.cost)
    out = []
    for label, point in (("learned-router", curve[0]), ("learned-router (cheapest within 1 point)", cheap)):
        chosen = router.choose(test_predicted, point.thresholds[0])
        names = [router.member_names[i] for i in chosen]
        out.append(
            TunedMethod(
                label=label,
                family="router",
                members=list(members),
                dev_accuracy=point.quality,
                dev_cost=point.cost,
                test_correct=[c[n] for (_, c, _), n in zip(test, names, strict=True)],
                test_cost=[s[n] for (_, _, s), n in zip(test, names, strict=True)],
                details={"threshold": point.thresholds[0], "dev_shares": point.shares},
            )
        )
    return out


ROUTER_FOLDS = 5
ROUTER_THRESHOLDS = [round(t, 3) for t in np.linspace(0.0, 0.5, 51)]


def _out_of_fold_curve(dev: Sequence[Any], embed: EmbedFn | None) -> list[OperatingPoint]:
    """The learned router's dev curve with every dev item routed by a router fitted on the other folds, so the
    threshold is chosen on held-out figures (a router judged on its own training items finds each one as its
    own nearest neighbour). One point per threshold of `ROUTER_THRESHOLDS`, folds weighted by their size."""
    from ensemble_core.strategies.learned_router import LearnedRouter

    folds = [
        (held, LearnedRouter(embed=embed).fit([r for i, r in enumerate(dev) if i % ROUTER_FOLDS != k]))
        for k in range(ROUTER_FOLDS)
        if (held := list(dev[k::ROUTER_FOLDS]))
    ]
    curves = [(len(held), router.curve(held, ROUTER_THRESHOLDS)) for held, router in folds]
    total = sum(n for n, _ in curves)
    points = []
    for i, threshold in enumerate(ROUTER_THRESHOLDS):
        at = [(n, curve[i]) for n, curve in curves]
        names = at[0][1].shares
        points.append(
            OperatingPoint(
                thresholds=[threshold],
                quality=sum(n * p.quality for n, p in at) / total,
                cost=sum(n * p.cost for n, p in at) / total,
                shares={m: sum(n * p.shares[m] for n, p in at) / total for m in names},
                expensive_share=sum(n * (p.expensive_share or 0.0) for n, p in at) / total,
            )
        )
    return points
