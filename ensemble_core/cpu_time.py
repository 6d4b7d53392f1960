"""CPU seconds spent on a piece of work, the cost measure that stays put on a shared machine (load moves wall
time, not CPU time)."""

from __future__ import annotations

import sys
import time


def cpu_clock() -> float:
    """A CPU-time clock for the calling thread's work: the thread's own CPU time when torch computes on one
    thread (then a local model's whole forward pass runs on its caller, so concurrent members are told
    apart exactly), else the process's CPU time (torch's worker threads count too; work that overlaps in
    one process then counts in each)."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() > 1:
        return time.process_time()
    return time.thread_time()
