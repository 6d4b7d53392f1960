"""CPU seconds per item of choice scoring, as `llm-ensemble tune` scores, for each packaged member in float32
and in bfloat16, with the items' accuracy in each (so a cheaper dtype shows what it costs in answers).

What a cascade's first stage costs against the strongest member depends on the processor and on the dtype:
bfloat16 pays only where the CPU has the kernels (AVX-512 BF16 or AMX; `dtype: auto` picks it there).
Run: python benchmarks/scoring_cost.py [--data arc_easy] [--items 30] [--threads 2]
"""

from __future__ import annotations

import argparse
import gc

import torch

from ensemble_core.eval.choice_scoring import score_items
from ensemble_core.eval.datasets import load_dataset
from ensemble_core.eval.items import ChoiceItem
from ensemble_core.members.packaged import PACKAGED

WARM_UP = 5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default="arc_easy")
    parser.add_argument("--items", type=int, default=30, help="items timed, after 5 warm-up items")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--members", default="smollm2,gemma3,qwen05,qwen15")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    items = [i for i in load_dataset(args.data).items if isinstance(i, ChoiceItem)][: WARM_UP + args.items]
    print(f"{args.data}, {args.items} items after {WARM_UP} warm-up, {args.threads} threads")
    print("| member | dtype | CPU s / item | wall s / item | right |")
    print("|---|---|---:|---:|---:|")
    for name in args.members.split(","):
        for dtype in ("float32", "bfloat16"):
            member = PACKAGED[name](dtype=dtype)
            list(score_items(member, items[:WARM_UP], with_prompt=False))
            scored = list(score_items(member, items[WARM_UP:], with_prompt=False))
            cpu = sum(s.cpu_s for _, s in scored) / len(scored)
            wall = sum(s.latency_s for _, s in scored) / len(scored)
            right = sum(s.prediction("chars") == item.gold for item, s in scored)
            print(f"| {name} | {dtype} | {cpu:.3f} | {wall:.3f} | {right}/{len(scored)} |", flush=True)
            del member
            gc.collect()


if __name__ == "__main__":
    main()
