"""Do independent member calls overlap? `Vote` over four scripted members that each take `--delay` seconds:
run sequentially this would take the sum of the delays; concurrently, about the longest one.

    python benchmarks/concurrency.py [--members 4] [--delay 1.0] [--strategy vote] [--blocking]

--blocking makes the members sleep in a blocking `generate` (as local models compute), which the engine runs
in worker threads; by default they sleep asynchronously (as API members wait on the network).

Prints the wall time and its ratio to the sum and to the max of the member latencies (ideal: 1/members and 1).
"""

from __future__ import annotations

import argparse
import time

from ensemble_core import Ensemble
from ensemble_core.members.base import Member
from ensemble_core.members.scripted import ScriptedMember


class BlockingMember(ScriptedMember):
    """A scripted member whose async call is the base class's: the blocking `generate` in a worker thread."""

    agenerate = Member.agenerate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--delay", type=float, default=1.0, help="seconds each member takes")
    parser.add_argument("--strategy", default="vote", help="vote or mbr (with similarity=lexical)")
    parser.add_argument("--blocking", action="store_true", help="members block (threads) instead of awaiting")
    args = parser.parse_args()
    kind = BlockingMember if args.blocking else ScriptedMember
    members = [kind(f"m{i}", ["Paris"], delay_s=args.delay) for i in range(args.members)]
    params = {"similarity": "lexical"} if args.strategy == "mbr" else {}
    ensemble = Ensemble(members, args.strategy, **params)
    start = time.perf_counter()
    result = ensemble.run("What is the capital of France?")
    wall = time.perf_counter() - start
    latencies = [c.latency_s for c in result.trace.calls]
    mode = "blocking" if args.blocking else "async"
    print(
        f"strategy={args.strategy} members={args.members} ({mode}) delay={args.delay}s answer={result.text!r}"
    )
    print(f"wall time          {wall:.3f} s")
    print(f"sum of latencies   {sum(latencies):.3f} s   ratio wall/sum = {wall / sum(latencies):.3f}")
    print(f"max of latencies   {max(latencies):.3f} s   ratio wall/max = {wall / max(latencies):.3f}")


if __name__ == "__main__":
    main()
