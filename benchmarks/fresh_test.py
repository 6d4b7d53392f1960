"""Judge a tune's methods, fitted on the same dev items, on the test items that no earlier report saw.

When a round widens its test split (`tune --test-size N` after rounds at `--test-size M`), its first M test
items were reported before, and widening after seeing them is a second look. This refits every method on
the same dev items from the tune's score cache and reports on test items M+1 to N only: a confirmation on
items that took no part in any choice. Nothing is scored again.
Run: python benchmarks/fresh_test.py --data arc_challenge --report reports/tune/arc_challenge \
    --seen 500 --test-size 872
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ensemble_core.eval import tune_report
from ensemble_core.eval.datasets import load_dataset
from ensemble_core.eval.items import ChoiceItem
from ensemble_core.eval.runner import ResultCache
from ensemble_core.eval.splits import Split
from ensemble_core.eval.tune import cached_scores, summarise
from ensemble_core.eval.tuning import tune_choices


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", required=True)
    parser.add_argument("--report", type=Path, required=True, help="the tune's report folder (its cache)")
    parser.add_argument("--members", default="smollm2,gemma3,qwen05,qwen15")
    parser.add_argument(
        "--seen", type=int, default=500, help="test items earlier rounds reported on (0: none of them)"
    )
    parser.add_argument("--dev-size", type=int, default=300)
    parser.add_argument("--test-size", type=int, required=True, help="the widened test split")
    parser.add_argument("--split-seed", type=int, default=0)
    args = parser.parse_args()
    members = args.members.split(",")
    whole = load_dataset(args.data)
    items = [i for i in whole.items if isinstance(i, ChoiceItem)]
    widened = Split(part="both", seed=args.split_seed, dev_size=args.dev_size, test_size=args.test_size)
    dev_ids, test_ids = widened.ids(items)
    fresh_ids = test_ids
    if args.seen:
        seen = Split(part="both", seed=args.split_seed, dev_size=args.dev_size, test_size=args.seen)
        fresh_ids = test_ids - seen.ids(items)[1]
    cache = ResultCache(args.report)
    scores = {m: cached_scores(cache, m) for m in members}
    missing = {m: len((dev_ids | fresh_ids) - set(s)) for m, s in scores.items()}
    if any(missing.values()):
        raise SystemExit(
            f"the cache in {args.report} lacks scores ({missing} items per member): run tune first"
        )
    dev = [i for i in items if i.id in dev_ids]
    fresh = [i for i in items if i.id in fresh_ids]
    methods = tune_choices(dev, fresh, scores, members, seed=0)
    described = f"dev {len(dev)} items; test items {args.seen + 1} to {args.test_size} of the split only"
    command = (
        f"python benchmarks/fresh_test.py --data {args.data} --seen {args.seen} --dev-size {args.dev_size} "
        f"--test-size {args.test_size}"
    )
    summary = summarise(
        whole.model_copy(update={"split": described}), widened, members, methods, command=command, seed=0
    )
    print(tune_report.markdown(summary))


if __name__ == "__main__":
    main()
