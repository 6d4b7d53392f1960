"""Cold and warm starts of `scripts/ask` on the default members (qwen05 + qwen15) or the small pair (smollm2 +
gemma3, two tokenizers: the case where token fusion builds a vocabulary alignment): time to first token of
each strategy named (`default`: the default ensemble as `scripts/ask` builds it), the time token fusion
spends on the vocabulary alignment, and how the converted weights load (time, memory).

Each run is a fresh process (`--child`) that does what `llm-ensemble ask` does (the default members, the
strategy, one question) but streams the answer, and reports, from its own start: when the first token
arrived, when the answer ended, the seconds spent importing, finding the packaged models, loading weights
and aligning vocabularies, and its memory
(resident, of which file-backed: weights memory-mapped from the safetensors cache rather than copied).
Cold: the alignment cache removed first; warm: the next fresh process. The converted weights are in the
page cache either way (dropping it would need root and slow everyone on the machine). With --copy-weights,
one more pair of runs loads the weights copied into memory (transformers' `disable_mmap=True`) to show what
memory-mapping saves.

    python benchmarks/warm_start.py [--max-tokens 8] [--members default|small]
        [--strategies default,speculative,single,fallback,cascade,token-fusion]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUESTION = "What is the capital of France?"


def _memory() -> dict[str, float]:
    """This process's resident memory, its peak, and the file-backed part, in MiB (Linux)."""
    fields = dict(
        line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line
    )
    return {
        k: int(fields[k].split()[0]) / 1024 for k in ("VmRSS", "VmHWM", "RssAnon", "RssFile") if k in fields
    }


def child(strategy: str, members_kind: str, max_tokens: int, copy_weights: bool, started: float) -> None:
    """One `ask`, streamed; prints a JSON line of timings measured from `started` (the parent's clock just
    before it spawned this process)."""
    timings: dict[str, float] = {"load_s": 0.0, "align_s": 0.0}
    from ensemble_core import fused_decoding
    from ensemble_core.members.hf import loading

    def timed(key, fn):
        def wrapper(*args, **kwargs):
            start = time.time()
            try:
                return fn(*args, **kwargs)
            finally:
                timings[key] += time.time() - start

        return wrapper

    loading.load_weights = timed("load_s", loading.load_weights)
    fused_decoding.cached_alignment = timed("align_s", fused_decoding.cached_alignment)
    if copy_weights:
        original = loading.AutoModelForCausalLM

        class Copied:
            @staticmethod
            def from_pretrained(*args, **kwargs):
                return original.from_pretrained(*args, disable_mmap=True, **kwargs)

        loading.AutoModelForCausalLM = Copied  # type: ignore[misc,assignment]
    from ensemble_core.members.hf import member as hf_member

    hf_member.load_weights = loading.load_weights  # the member imported it by name
    from ensemble_core import Ensemble
    from ensemble_core.defaults import default_ensemble, default_members, small_members

    imported = time.time()
    # finds the packaged models (assembling or checking their files)
    members = default_members() if members_kind == "default" else small_members()
    built = time.time()
    params = {"members": [members[-1].name]} if strategy == "single" else {}  # the stronger one alone
    ensemble = default_ensemble() if strategy == "default" else Ensemble(members, strategy, **params)
    first = None
    text = []
    for delta in ensemble.stream(QUESTION, max_tokens=max_tokens):
        if delta.text and first is None:
            first = time.time()
        text.append(delta.text)
    end = time.time()
    print(
        json.dumps(
            {
                "strategy": strategy,
                "imports_s": imported - started,
                "members_s": built - imported,
                "ttft_s": (first or end) - started,
                "total_s": end - started,
                **timings,
                "memory_mib": _memory(),
                "text": "".join(text),
            }
        )
    )


def run_child(strategy: str, members_kind: str, max_tokens: int, copy_weights: bool = False) -> dict:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        strategy,
        "--members",
        members_kind,
        "--max-tokens",
        str(max_tokens),
    ]
    if copy_weights:
        command.append("--copy-weights")
    started = time.time()
    done = subprocess.run(
        [*command, "--started", repr(started)], capture_output=True, text=True, env=env, timeout=1800
    )
    if done.returncode != 0:
        raise SystemExit(f"{strategy}: the child failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategies", default="speculative,single,fallback,cascade,token-fusion")
    parser.add_argument("--members", choices=("default", "small"), default="default")
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument(
        "--copy-weights", action="store_true", help="also load the weights copied, not mapped"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--started", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.members, args.max_tokens, args.copy_weights, args.started)
        return

    from ensemble_core.alignment_cache import alignments_root

    print(f"{args.members} members; load average {os.getloadavg()}; alignment cache {alignments_root()}")
    columns = ("TTFT s", "total s", "import s", "members s", "load s", "align s", "RSS MiB", "file MiB")
    print(f"{'strategy':13} {'start':6} " + " ".join(f"{c:>8}" for c in columns))
    for strategy in args.strategies.split(","):
        shutil.rmtree(alignments_root(), ignore_errors=True)
        for start in ("cold", "warm"):
            _report(strategy, start, run_child(strategy, args.members, args.max_tokens))
    if args.copy_weights:
        for strategy in ("single", "token-fusion"):
            _report(strategy, "copied", run_child(strategy, args.members, args.max_tokens, copy_weights=True))
    print(f"load average {os.getloadavg()}")


def _report(strategy: str, start: str, row: dict) -> None:
    memory = row["memory_mib"]
    figures = (
        row["ttft_s"],
        row["total_s"],
        row["imports_s"],
        row["members_s"],
        row["load_s"],
        row["align_s"],
    )
    print(
        f"{strategy:13} {start:6} "
        + " ".join(f"{x:8.2f}" for x in figures)
        + f" {memory['VmRSS']:8.0f} {memory.get('RssFile', 0):8.0f}  {row['text'][:40]!r}",
        flush=True,
    )


if __name__ == "__main__":
    main()
