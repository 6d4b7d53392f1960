"""What the LangChain adapter costs per call: `EnsembleChatModel.invoke` against `Ensemble.run` on an instant
scripted member, so the difference is the adapter's own work (message conversion, callbacks, metadata).

    python benchmarks/adapter_overhead.py [--calls 200]

Prints the median time of each and their ratio (measured in one run).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from ensemble_core import Ensemble
from ensemble_core.members.scripted import ScriptedMember
from langchain_ensemble import EnsembleChatModel

QUESTION = "What is the capital of France?"


def median_seconds(call: Callable[[], object], calls: int) -> float:
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    ensemble = Ensemble([ScriptedMember("a", ["Paris."])], "single", member="a")
    chat = EnsembleChatModel(ensemble=ensemble)
    ensemble.run(QUESTION)
    chat.invoke(QUESTION)
    engine = median_seconds(lambda: ensemble.run(QUESTION), args.calls)
    adapter = median_seconds(lambda: chat.invoke(QUESTION), args.calls)
    print(
        f"EnsembleChatModel.invoke / Ensemble.run: {adapter / engine:.2f}x (median of {args.calls}: invoke "
        f"{adapter * 1000:.2f} ms, run {engine * 1000:.2f} ms, +{(adapter - engine) * 1000:.2f} ms per call)"
    )


if __name__ == "__main__":
    main()
