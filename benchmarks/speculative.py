"""Speculative decoding with qwen05 drafting for qwen15, against qwen15 alone: identical greedy text and the
speed-up, in one run.

For each prompt, in turn (so load from other processes hits both alike): qwen15 answers alone (`single`,
its own `generate`), then the `speculative` strategy answers; the texts must be identical token for token.
Figures: tokens/s of each (sum of tokens over sum of seconds), their ratio (target >= 1.5x on 2 CPU cores),
the acceptance rate (kept / drafted tokens), tokens per verifier pass. With --assisted, transformers'
assisted generation (`generate(assistant_model=...)`, its defaults) runs on the same prompts for reference.

In bfloat16 a pass over several tokens rounds differently than a one-token step, so where qwen15's two best
tokens tie (or nearly) the texts can part; --verifier-dtype float32 runs qwen15 (alone and verifying) in
float32, where they do not; --pack-verifier then lays its linear layers out for oneDNN (a float32 pass over a
few tokens otherwise costs twice one token on the CPU). --drafter-quantization int8 gives qwen05 int8 weights
(HFMember quantization, bfloat16 inputs): a cheaper draft step, and still qwen15's text, since qwen15 checks
every drafted token.

    python benchmarks/speculative.py [--tokens 64] [--prompts 10] [--draft adaptive|N] [--assisted]
        [--verifier-dtype auto|float32] [--pack-verifier] [--drafter-dtype auto|float32]
        [--drafter-quantization int8] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from ensemble_core import Ensemble
from ensemble_core.members.packaged import qwen05, qwen15

PROMPTS = [
    "Write a Python function that checks whether a number is prime.",
    "Write a Python function that returns the n-th Fibonacci number iteratively.",
    "Explain what a hash map is and when to use one.",
    "Write a SQL query that returns the ten customers with the highest total order value.",
    "Write a JavaScript function that debounces another function.",
    "What is the difference between a process and a thread?",
    "Write a Python class for a stack with push, pop and peek.",
    "Write a bash script that counts the lines of every .py file in a folder.",
    "Explain recursion to a beginner, with a short example in Python.",
    "Write a Python function that merges two sorted lists into one sorted list.",
]


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def assisted(verifier, drafter, request, tokens: int) -> tuple[str, int, float]:
    """transformers' assisted generation (its default draft schedule), greedy: (text, tokens, seconds)."""
    lm = verifier.loaded()
    ids = torch.tensor([lm.encode_text(verifier.format_prompt(request))], device=lm.device)
    start = time.perf_counter()
    with torch.inference_mode():
        out = lm.model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            assistant_model=drafter.model,
            max_new_tokens=tokens,
            do_sample=False,
            eos_token_id=lm.eos_ids(),
            pad_token_id=lm.pad_id(),
        )
    seconds = time.perf_counter() - start
    new = [t for t in out[0, ids.shape[1] :].tolist() if t not in lm.eos_ids()]
    return lm.decode(new), len(new), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--prompts", type=int, default=len(PROMPTS))
    parser.add_argument("--draft", default="adaptive", help="'adaptive' or a fixed number of drafted tokens")
    parser.add_argument("--max-draft", type=int, default=8)
    parser.add_argument("--assisted", action="store_true", help="also run transformers' assisted generation")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--verifier-dtype", default="auto", help="qwen15's dtype (auto: bfloat16 here)")
    parser.add_argument("--drafter-dtype", default="auto", help="qwen05's dtype")
    parser.add_argument(
        "--pack-verifier",
        action="store_true",
        help="qwen15's float32 linear layers packed for oneDNN (HFMember pack_weights), alone and verifying",
    )
    parser.add_argument(
        "--drafter-quantization",
        choices=["int8"],
        default=None,
        help="qwen05's weights (HFMember quantization)",
    )
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    draft = args.draft if args.draft == "adaptive" else int(args.draft)

    placed = {"device": args.device} if args.device else {}
    drafter = qwen05(dtype=args.drafter_dtype, quantization=args.drafter_quantization, **placed)
    verifier = qwen15(dtype=args.verifier_dtype, pack_weights=args.pack_verifier, **placed)
    for member in (drafter, verifier):
        member.load()
    alone = Ensemble([verifier], "single", members=[verifier.name])
    spec = Ensemble(
        [drafter, verifier],
        "speculative",
        drafter=drafter.name,
        verifier=verifier.name,
        draft_tokens=draft,
        max_draft_tokens=args.max_draft,
    )
    print(
        f"device={verifier.device} verifier dtype={verifier.dtype} packed={verifier.pack_weights} "
        f"drafter dtype={drafter.dtype} quantization={drafter.quantization} torch "
        f"threads={torch.get_num_threads()} tokens={args.tokens} draft={draft} max_draft={args.max_draft} "
        f"load average={os.getloadavg()}"
    )
    alone.run(PROMPTS[0], max_tokens=4)  # warm-up: kernels, the alignment
    spec.run(PROMPTS[0], max_tokens=4)

    totals = {"alone": [0, 0.0], "speculative": [0, 0.0], "assisted": [0, 0.0]}
    drafted = accepted = passes = identical = assisted_identical = 0
    draft_s = verify_s = 0.0
    prompts = PROMPTS[: args.prompts]
    print(f"{'#':>2} {'alone tok/s':>11} {'spec tok/s':>10} {'ratio':>6} {'kept/drafted':>13} {'same':>5}")
    for i, prompt in enumerate(prompts):
        base, base_s = timed(lambda prompt=prompt: alone.run(prompt, max_tokens=args.tokens))
        fast, fast_s = timed(lambda prompt=prompt: spec.run(prompt, max_tokens=args.tokens))
        n_base, n_fast = base.usage.output_tokens, fast.trace.details["tokens"]
        same = fast.text == base.text and n_fast == n_base
        identical += same
        details = fast.trace.details
        drafted += details["drafted"]
        accepted += details["accepted"]
        passes += details["verifier_passes"]
        draft_s += details["timing"]["draft_s"]
        verify_s += details["timing"]["verify_s"]
        totals["alone"][0] += n_base
        totals["alone"][1] += base_s
        totals["speculative"][0] += n_fast
        totals["speculative"][1] += fast_s
        ratio = (n_fast / fast_s) / (n_base / base_s)
        line = (
            f"{i:2d} {n_base / base_s:11.2f} {n_fast / fast_s:10.2f} {ratio:6.2f} "
            f"{details['accepted']:>6}/{details['drafted']:<6} {'yes' if same else 'NO':>5}"
        )
        if args.assisted:
            text, n, seconds = assisted(
                verifier, drafter, alone.request(prompt, max_tokens=args.tokens), args.tokens
            )
            totals["assisted"][0] += n
            totals["assisted"][1] += seconds
            assisted_identical += text == base.text
            line += f"  assisted {n / seconds:5.2f} tok/s {'same' if text == base.text else 'DIFFERENT'}"
        print(line, flush=True)
        if not same:
            print(f"   alone: {base.text!r}\n   spec:  {fast.text!r}")

    rate = {k: n / s for k, (n, s) in totals.items() if s}
    (n_alone, s_alone), (n_spec, s_spec) = totals["alone"], totals["speculative"]
    print(f"\n{len(prompts)} prompts x {args.tokens} tokens, load average at the end {os.getloadavg()}")
    print(f"  qwen15 alone      {rate['alone']:6.2f} tokens/s ({n_alone} tokens, {s_alone:.1f} s)")
    print(
        f"  speculative       {rate['speculative']:6.2f} tokens/s ({n_spec} tokens, {s_spec:.1f} s): "
        f"{rate['speculative'] / rate['alone']:.2f}x qwen15 alone (target >= 1.5x)"
    )
    print(
        f"  acceptance rate   {accepted / max(drafted, 1):.1%} ({accepted} of {drafted} drafted tokens "
        f"kept); {n_spec / max(passes, 1):.2f} tokens per verifier pass"
    )
    print(
        f"  speculative time  drafting {draft_s:.1f} s ({draft_s / max(drafted, 1):.3f} s per drafted token, "
        f"syncs included), verifying {verify_s:.1f} s ({verify_s / max(passes, 1):.3f} s per pass)"
    )
    print(f"  identical greedy text: {identical} of {len(prompts)} prompts")
    if args.assisted:
        print(
            f"  transformers assisted generation {rate['assisted']:6.2f} tokens/s: "
            f"{rate['assisted'] / rate['alone']:.2f}x; identical text {assisted_identical} of {len(prompts)}"
        )


if __name__ == "__main__":
    main()
