"""LearnedRouter on real data: quality against the share of calls to the expensive member, on ARC-Easy.

Each default member answers each item by scoring the choices (log-likelihood per character); a record holds
the question, each member's correctness (1/0) and its measured seconds for the item (the cost). The items are
split train / dev / test (50/25/25); the router is fitted on train, its threshold calibrated on dev for each
target share of calls to the expensive member, and measured on test; the table averages `--splits` random
splits. Baselines: each member alone, routing at random with the same share, and the oracle (the cheap member
unless only the expensive one is right).
Scoring dominates the run time (about 1 s per item per member on a busy CPU; `OMP_NUM_THREADS=1` helps when
other work shares the cores); `--records FILE` keeps the records (JSON lines) so later runs skip it.
Run: python benchmarks/learned_router_arc.py [--items 240] [--k 20] [--splits 5] [--records /tmp/arc.jsonl]
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ensemble_core.defaults import small_members
from ensemble_core.errors import ConfigError
from ensemble_core.eval.choice_scoring import score_items
from ensemble_core.eval.datasets import load_dataset
from ensemble_core.scoring.embeddings import default_embed
from ensemble_core.strategies import LearnedRouter
from ensemble_core.strategies.learned_router import RouterRecord


def build_records(n_items: int) -> list[RouterRecord]:
    """One record per ARC-Easy item: each member's correctness and seconds, from scoring the choices."""
    items = load_dataset("arc_easy", limit=n_items).items
    quality: dict[str, list[float]] = {}
    cost: dict[str, list[float]] = {}
    for member in small_members():
        member.load()
        start = time.perf_counter()
        scored = list(score_items(member, items, with_prompt=False))
        print(f"scored {len(items)} items with {member.name} in {time.perf_counter() - start:.0f} s")
        quality[member.name] = [float(s.prediction("chars") == item.gold) for item, s in scored]
        cost[member.name] = [s.latency_s for _, s in scored]
    return [
        RouterRecord(
            conversation=item.question,
            quality={name: q[i] for name, q in quality.items()},
            cost={name: c[i] for name, c in cost.items()},
        )
        for i, item in enumerate(items)
    ]


def cached_records(path: Path | None, n_items: int) -> list[RouterRecord]:
    """The records from `path` when it exists (and holds `n_items`), else built (and written there)."""
    if path is not None and path.is_file():
        records = [RouterRecord.model_validate_json(line) for line in path.read_text().splitlines() if line]
        if len(records) == n_items:
            return records
    records = build_records(n_items)
    if path is not None:
        path.write_text("".join(r.model_dump_json() + "\n" for r in records))
    return records


TARGETS = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]


class CachedEmbed:
    """`default_embed` remembering each text's vector: the splits embed the same questions many times."""

    def __init__(self) -> None:
        self.vectors: dict[str, np.ndarray] = {}

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        new = [t for t in dict.fromkeys(texts) if t not in self.vectors]
        if new:
            self.vectors.update(zip(new, default_embed(new), strict=True))
        return np.stack([self.vectors[t] for t in texts])


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def split_rows(
    records: list[RouterRecord], seed: int, k: int, embed: CachedEmbed
) -> tuple[dict[str, float], dict[float, list[float]]]:
    """On one random split: test accuracy of each member alone and of the oracle, and for each target share
    the test [share of expensive calls, accuracy, accuracy of random routing at that share, seconds per
    item]."""
    records = list(records)
    random.Random(seed).shuffle(records)
    n_train, n_dev = len(records) // 2, len(records) // 4
    train, dev, test = records[:n_train], records[n_train : n_train + n_dev], records[n_train + n_dev :]
    router = LearnedRouter(k=k, embed=embed).fit(train)
    costs = router.costs
    cheap, pricey = min(costs, key=costs.__getitem__), max(costs, key=costs.__getitem__)
    alone = {name: mean([r.quality[name] for r in test]) for name in costs}
    alone["oracle"] = mean([max(r.quality.values()) for r in test])
    rows = {}
    for target in TARGETS:
        try:
            tuned = router.calibrate(dev, target=target)
        except ConfigError:
            continue
        (point,) = tuned.curve(test, thresholds=[tuned.threshold])
        share = point.expensive_share or 0.0
        at_random = (1 - share) * alone[cheap] + share * alone[pricey]
        rows[target] = [share, point.quality, at_random, point.cost]
    return alone, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=240)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--splits", type=int, default=5, help="random train/dev/test splits to average")
    parser.add_argument(
        "--records", type=Path, default=None, help="JSON lines file caching the scored records"
    )
    args = parser.parse_args()

    records = cached_records(args.records, args.items)
    costs = {name: mean([r.cost[name] for r in records]) for name in records[0].cost}
    pricey = max(costs, key=costs.__getitem__)
    print(
        f"{len(records)} ARC-Easy items; mean seconds per item: "
        + ", ".join(f"{n} {c:.3f}" for n, c in costs.items())
    )
    embed = CachedEmbed()
    splits = [split_rows(records, seed, args.k, embed) for seed in range(args.splits)]
    alone = {name: mean([a[name] for a, _ in splits]) for name in splits[0][0]}
    print(f"test accuracy over {args.splits} splits: " + ", ".join(f"{n} {a:.3f}" for n, a in alone.items()))
    print(
        f"\n{'target':>6} {'share ' + pricey:>14} {'accuracy':>8} {'random':>7} {'s/item':>7} {'splits':>6}"
    )
    for target in TARGETS:
        found = [rows[target] for _, rows in splits if target in rows]
        if found:
            share, accuracy, at_random, seconds = (mean(list(column)) for column in zip(*found, strict=True))
            print(
                f"{target:6.1f} {share:14.2f} {accuracy:8.3f} {at_random:7.3f} {seconds:7.3f} {len(found):6d}"
            )


if __name__ == "__main__":
    main()
