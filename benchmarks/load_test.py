"""Load test on loopback: N concurrent requests through `EnsembleChatModel.abatch` against the default local
members and a real llama.cpp server member. Checks that every request is answered or fails with a clear
error, none is lost or duplicated, and memory stays bounded; reports throughput and p50/p95 latency.

Run: python benchmarks/load_test.py [--requests 200] [--max-tokens 12] [--strategy vote]
(needs llama-cpp-python[server]; the server is started and stopped by the script)
"""

from __future__ import annotations

import argparse
import asyncio
import re
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from langchain_core.messages import HumanMessage

from ensemble_core import Ensemble
from ensemble_core.defaults import small_members
from ensemble_core.members.openai_compat import OpenAICompatMember
from ensemble_core.members.packaged import smollm2_path
from ensemble_core.members.scripted import ScriptedMember
from langchain_ensemble import EnsembleChatModel
from tests.llama_server import LlamaServer


def _echo(request) -> str:
    """Answers with the request's own ticket number, so a mixed-up or duplicated answer is detectable."""
    return re.search(r"ticket (\d+)", request.messages[-1].content).group(1)


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def run(n: int, max_tokens: int, strategy: str) -> None:
    with LlamaServer(smollm2_path()) as server:
        remote = OpenAICompatMember(
            base_url=server.base_url, model="smollm2", name="llamacpp", score=False, timeout_s=300
        )
        members = [*small_members(), remote, ScriptedMember("echo", _echo)]
        for member in members:
            member.load()
        chat = EnsembleChatModel(ensemble=Ensemble(members, strategy), max_tokens=max_tokens)
        await chat.ainvoke("warm up")
        rss_before = rss_mb()
        inputs = [[HumanMessage(f"This is ticket {i}. What is {i} plus {i}?")] for i in range(n)]
        latencies: list[float] = []

        async def timed(messages):
            start = time.perf_counter()
            try:
                return await chat.ainvoke(messages)
            finally:
                latencies.append(time.perf_counter() - start)

        start = time.perf_counter()
        results = await asyncio.gather(*(timed(m) for m in inputs), return_exceptions=True)
        wall = time.perf_counter() - start
        batch_start = time.perf_counter()
        batch_results = await chat.abatch(inputs[:20], config={"max_concurrency": 20}, return_exceptions=True)
        batch_wall = time.perf_counter() - batch_start

    answered = [r for r in results if not isinstance(r, BaseException)]
    failed = [r for r in results if isinstance(r, BaseException)]
    tickets = []
    for result in answered:
        calls = result.response_metadata["ensemble_trace"]["calls"]
        tickets += [c["text"] for c in calls if c["member"] == "echo"]
    lost = n - len(answered) - len(failed)
    duplicated = len(tickets) - len(set(tickets))
    mismatched = sum(
        1
        for i, r in enumerate(results)
        if not isinstance(r, BaseException)
        and [c["text"] for c in r.response_metadata["ensemble_trace"]["calls"] if c["member"] == "echo"]
        != [str(i)]
    )
    latencies.sort()
    print(f"strategy={strategy} requests={n} max_tokens={max_tokens} members={[m.name for m in members]}")
    print(
        f"answered={len(answered)} failed={len(failed)} lost={lost} duplicated={duplicated} "
        f"mismatched={mismatched}"
    )
    for err in failed[:3]:
        print(f"  failure: {type(err).__name__}: {err}")
    print(
        f"wall={wall:.1f}s throughput={n / wall:.2f} req/s p50={statistics.median(latencies):.1f}s "
        f"p95={latencies[int(0.95 * (len(latencies) - 1))]:.1f}s"
    )
    print(
        f"abatch(20) wall={batch_wall:.1f}s "
        f"answered={sum(not isinstance(r, BaseException) for r in batch_results)}"
    )
    print(f"peak RSS {rss_mb():.0f} MB (after warm-up {rss_before:.0f} MB)")
    local_batches = {m.name: m._batcher.batch_sizes for m in members if hasattr(m, "_batcher")}
    for name, sizes in local_batches.items():
        if sizes:
            print(
                f"  {name}: {len(sizes)} generate batches, mean size {statistics.mean(sizes):.1f}, max "
                f"{max(sizes)}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--max-tokens", type=int, default=12)
    parser.add_argument("--strategy", default="vote")
    args = parser.parse_args()
    asyncio.run(run(args.requests, args.max_tokens, args.strategy))


if __name__ == "__main__":
    main()
