"""TokenFusion of the small pair (SmolLM2 + Gemma 3, different tokenizers): speed and identity.

Measured in one run, on the same prompt:
- each member's own `generate` for --tokens new tokens, and their sum (the physical limit on one device);
- fused decoding (KV caches, union vocabulary) for --tokens new tokens: target <= 1.15x the sum;
- a naive fusion that re-runs every member on the whole sequence at each step (as the papers' reference code
  does), with the same mixing, for comparison;
- the share of a fused step spent on the cross-tokenizer work (projection into the union vocabulary, mixing,
  choosing, spelling the token in each member's ids): target < 10%;
- identity: weight 1 on one member reproduces its greedy output (--identity-tokens each direction);
- with --batch N: N different requests fused together as rows of one batch, against the same N one after
  another (tokens/s ratio; the GPU goal is >= 3x at batch 8).
Times are per new token x --tokens when a run ends early (EOS), and the best of --repeats. On a CUDA device
the members run in bfloat16 and the fused step loop on the GPU.

    python benchmarks/token_fusion.py [--tokens 64] [--repeats 3] [--device cpu|cuda] [--batch 8]
"""

from __future__ import annotations

import argparse
import time

import torch

from ensemble_core import Ensemble
from ensemble_core.asyncio_bridge import run_sync
from ensemble_core.defaults import small_members
from ensemble_core.fused_decoding import member_alignment
from ensemble_core.mixing import Mixer
from ensemble_core.strategies import TokenFusion

PROMPT = "Write a long story about a cat who learns to fly, with many details."


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def naive_fusion(members, request, max_tokens: int) -> tuple[int, float]:
    """Greedy uniform fusion without caches: every step runs each member on its whole sequence."""
    alignment = member_alignment(members)
    mixer = Mixer(alignment, "prob")
    seqs = [m.encode_text(m.format_prompt(request)) for m in members]
    weights = torch.full((1, len(members)), 1.0 / len(members))
    start = time.perf_counter()
    produced = 0
    for _ in range(max_tokens):
        logprobs = []
        for member, ids in zip(members, seqs, strict=True):
            with torch.inference_mode():
                logits = member.model(input_ids=torch.tensor([ids], device=member.device)).logits[:, -1]
            logprobs.append(torch.log_softmax(logits.float(), dim=-1))
        union_id = int(mixer.mix(logprobs, range(len(members)), weights).argmax(-1))
        if union_id in alignment.eos:
            break
        produced += 1
        for i, ids in enumerate(seqs):
            ids.extend(alignment.feed(i, union_id))
    return produced, time.perf_counter() - start


def batched_vs_sequential(members, batch: int, tokens: int) -> None:
    """`batch` different requests fused as rows of one batch, against the same requests one at a time."""
    ens = Ensemble(members, TokenFusion(batch_size=batch))
    prompts = [f"{PROMPT} Give it the number {i} somewhere." for i in range(batch)]
    results, batched_s = timed(lambda: ens.batch(prompts, max_tokens=tokens))
    n_batched = sum(r.trace.details["fused_tokens"] for r in results)
    singles, sequential_s = timed(lambda: [ens.run(p, max_tokens=tokens) for p in prompts])
    n_sequential = sum(r.trace.details["fused_tokens"] for r in singles)
    ratio = (n_batched / batched_s) / (n_sequential / sequential_s)
    print(
        f"\nbatch of {batch}: {n_batched / batched_s:.1f} tokens/s fused together, "
        f"{n_sequential / sequential_s:.1f} tokens/s one after another: {ratio:.2f}x (GPU goal >= 3x); "
        f"same texts: {[r.text for r in results] == [r.text for r in singles]}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--identity-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    parser.add_argument("--batch", type=int, default=0, help="also fuse this many requests as one batch")
    args = parser.parse_args()

    members = small_members(**({"device": args.device} if args.device else {}))
    for m in members:
        m.load()
    ens = Ensemble(members, TokenFusion())
    request = ens.request(PROMPT, max_tokens=args.tokens)
    device = members[0].device
    print(
        f"device={device} dtype={members[0].dtype} torch threads={torch.get_num_threads()} new "
        f"tokens={args.tokens}"
    )

    # warm-up (weights, alignment, kernels)
    ens.run(PROMPT, max_tokens=4)
    for m in members:
        m.generate(ens.request(PROMPT, max_tokens=4))

    alone: dict[str, float] = {}
    fused_best = naive_best = float("inf")
    fused_result = None
    for _ in range(args.repeats):
        for m in members:
            generation, seconds = timed(lambda m=m: m.generate(request))
            per64 = seconds / max(generation.usage.output_tokens, 1) * args.tokens
            alone[m.name] = min(alone.get(m.name, float("inf")), per64)
            print(f"  {m.name:8s} generate: {generation.usage.output_tokens} tokens in {seconds:.2f} s")
        result, seconds = timed(lambda: run_sync(ens.arun_request(request)))
        n = result.trace.details["fused_tokens"]
        print(f"  fused: {n} tokens in {seconds:.2f} s")
        if seconds / max(n, 1) * args.tokens < fused_best:
            fused_best, fused_result = seconds / max(n, 1) * args.tokens, result
        produced, seconds = naive_fusion(members, request, args.tokens)
        print(f"  naive fused (no cache): {produced} tokens in {seconds:.2f} s")
        naive_best = min(naive_best, seconds / max(produced, 1) * args.tokens)

    total_alone = sum(alone.values())
    print(f"\nper {args.tokens} new tokens (best of {args.repeats}):")
    for name, seconds in alone.items():
        print(f"  {name:8s} alone          {seconds:7.2f} s  ({args.tokens / seconds:6.1f} tokens/s)")
    print(f"  sum of members           {total_alone:7.2f} s")
    print(
        f"  token fusion             {fused_best:7.2f} s  ({args.tokens / fused_best:6.1f} tokens/s)  "
        f"ratio to sum = {fused_best / total_alone:.3f}  (target <= 1.15)"
    )
    print(f"  naive fusion (no cache)  {naive_best:7.2f} s  ratio to sum = {naive_best / total_alone:.3f}")
    slower = max(alone.values())
    print(f"  token fusion tokens/s / the slower member's = {slower / fused_best:.2f}x (GPU goal >= 0.8x)")

    assert fused_result is not None
    timing = fused_result.trace.details["timing"]
    step_s = timing["total_s"] / max(timing["steps"], 1)
    align_s = (timing["mix_s"] + timing["feed_s"]) / max(timing["steps"], 1)
    print(
        f"  cross-tokenizer work per step {align_s * 1000:.2f} ms of {step_s * 1000:.2f} ms = "
        f"{align_s / step_s:.1%} (union projection + mixing + choice + spelling; target < 10%)"
    )

    if args.batch:
        batched_vs_sequential(members, args.batch, args.tokens)

    print(f"\nidentity ({args.identity_tokens} tokens, weight 1 on one member):")
    for m in members:
        probe = Ensemble(members, TokenFusion(weights={m.name: 1.0}))
        fused = probe.run(PROMPT, max_tokens=args.identity_tokens)
        own = m.generate(probe.request(PROMPT, max_tokens=args.identity_tokens))
        same = fused.text == own.text and fused.trace.details["fused_tokens"] == own.usage.output_tokens
        print(f"  {m.name:8s} {'identical' if same else 'DIFFERENT'} ({own.usage.output_tokens} tokens)")


if __name__ == "__main__":
    main()
