"""Per-token cost of `HFMember.step` at sequence position ~10 and ~400 for the small pair (SmolLM2, Gemma 3).

With the KV cache a step costs O(1) in the sequence length: the ratio should stay near 1 (issue: within 1.5x).
The two sessions advance in turn, one token each, so load from other processes hits both alike.
Run: python benchmarks/step_cost.py [--steps 30] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from ensemble_core.defaults import small_members


def session_at(member, position: int):
    """A step session whose prompt is `position` tokens of filler text."""
    ids = member.encode_text("the quick brown fox jumps over the lazy dog " * 200)[:position]
    return member.step_session([member.tokenizer.decode(ids, skip_special_tokens=True)])


def interleaved_step_seconds(member, positions: list[int], steps: int) -> list[float]:
    """Median wall time of one `advance` by one token in a session at each position, stepped in turn."""
    sessions = [session_at(member, p) for p in positions]
    times: list[list[float]] = [[] for _ in positions]
    for _ in range(steps):
        for session, acc in zip(sessions, times, strict=True):
            token = int(session.logprobs()[0].argmax())
            start = time.perf_counter()
            session.advance([[token]])
            acc.append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"{'member':10} {'pos 10 (ms)':>12} {'pos 400 (ms)':>13} {'ratio':>6}")
    for member in small_members():
        member.load()
        interleaved_step_seconds(member, [10], 3)  # warm-up
        short, long = interleaved_step_seconds(member, [10, 400], args.steps)
        print(f"{member.name:10} {short * 1e3:12.1f} {long * 1e3:13.1f} {long / short:6.2f}")


if __name__ == "__main__":
    main()
