"""LearnedRouter on real data: quality against the share of calls to the expensive member, on ARC-Easy.

Each default member answers each item by scoring the choices (log-likelihood per character); a record holds
the question, each member's correctness (1/0) and its measured seconds for the item (the cost). The items are
split train / dev / test; the router is fitted on train, its threshold calibrated on dev for each target share
of calls to the expensive member, and measured on test. Baselines: each member alone, routing at random with
the same share, and the oracle (the cheap member unless only the expensive one is right).
Scoring dominates the run time (about 1 s per item per member on a busy CPU; `OMP_NUM_THREADS=1` helps when
other work shares the cores); `--records FILE` keeps the records (JSON lines) so later runs skip it.
Run: python benchmarks/learned_router_arc.py [--items 240] [--k 20] [--records /tmp/arc_records.jsonl]
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

from ensemble_core.defaults import default_members
from ensemble_core.errors import ConfigError
from ensemble_core.eval.choice_scoring import score_items
from ensemble_core.eval.datasets import load_dataset
from ensemble_core.strategies import LearnedRouter
from ensemble_core.strategies.learned_router import RouterRecord


def build_records(n_items: int) -> list[RouterRecord]:
    """One record per ARC-Easy item: each member's correctness and seconds, from scoring the choices."""
    items = load_dataset("arc_easy", limit=n_items).items
    quality: dict[str, list[float]] = {}
    cost: dict[str, list[float]] = {}
    for member in default_members():
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


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=240)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--records", type=Path, default=None, help="JSON lines file caching the scored records"
    )
    args = parser.parse_args()

    records = cached_records(args.records, args.items)
    random.Random(args.seed).shuffle(records)
    n_train, n_dev = int(0.5 * len(records)), int(0.25 * len(records))
    train, dev, test = records[:n_train], records[n_train : n_train + n_dev], records[n_train + n_dev :]
    router = LearnedRouter(k=args.k).fit(train)
    costs = router.costs
    cheap, pricey = min(costs, key=costs.__getitem__), max(costs, key=costs.__getitem__)
    print(f"records: {len(train)} train / {len(dev)} dev / {len(test)} test; mean seconds per item: "
          + ", ".join(f"{name} {c:.3f}" for name, c in costs.items()))  # fmt: skip

    acc = {name: mean([r.quality[name] for r in test]) for name in costs}
    oracle = mean([max(r.quality.values()) for r in test])
    print(f"test accuracy alone: {cheap} {acc[cheap]:.3f}, {pricey} {acc[pricey]:.3f}; oracle {oracle:.3f}")
    print(
        f"\n{'target':>6} {'threshold':>9} {'share ' + pricey:>14} {'accuracy':>8} {'random':>7} {'s/item':>7}"
    )
    for target in [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]:
        try:
            router.calibrate(dev, target=target)
        except ConfigError:
            continue
        (point,) = router.curve(test, thresholds=[router.threshold])
        share = point.expensive_share
        at_random = (1 - share) * acc[cheap] + share * acc[pricey]
        print(
            f"{target:6.1f} {point.threshold:9.4f} {share:14.2f} {point.mean_quality:8.3f} {at_random:7.3f} "
            f"{point.mean_cost:7.3f}"
        )


if __name__ == "__main__":
    main()
