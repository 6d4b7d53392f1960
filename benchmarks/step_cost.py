"""Per-token cost of `HFMember.step` at sequence position ~10 and ~400 for the default members.

With the KV cache a step costs O(1) in the sequence length: the ratio should stay near 1 (issue: within 1.5x).
Run: python benchmarks/step_cost.py [--steps 30]
"""

from __future__ import annotations

import argparse
import statistics
import time

from ensemble_core.defaults import default_members


def median_step_seconds(member, prompt_tokens: int, steps: int) -> float:
    """Median wall time of one `advance` by one token after a prompt of `prompt_tokens` tokens."""
    filler = member.tokenizer.decode(member.encode_text("the quick brown fox jumps over the lazy dog " * 200))
    ids = member.encode_text(filler)[:prompt_tokens]
    session = member.step_session([member.tokenizer.decode(ids, skip_special_tokens=True)])
    times = []
    for _ in range(steps):
        token = int(session.logprobs()[0].argmax())
        start = time.perf_counter()
        session.advance([[token]])
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    print(f"{'member':10} {'pos 10 (ms)':>12} {'pos 400 (ms)':>13} {'ratio':>6}")
    for member in default_members():
        member.load()
        median_step_seconds(member, 10, 3)  # warm-up
        short = median_step_seconds(member, 10, args.steps)
        long = median_step_seconds(member, 400, args.steps)
        print(f"{member.name:10} {short * 1e3:12.1f} {long * 1e3:13.1f} {long / short:6.2f}")


if __name__ == "__main__":
    main()
