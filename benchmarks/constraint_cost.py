"""What grammar-constrained decoding costs per token, measured within one run (ratios, not absolute times):

1. one local member (default qwen05) writing a forced tool call and a JSON-schema answer: the time spent in
   the per-row constraint (`RowConstraints`: advancing the grammar, computing and applying the mask) against
   the whole decode step, per new token; target under 10%;
2. token fusion of two members with different tokenizers (default smollm2 + gemma3): the time spent on the
   union-vocabulary constraint (each member's mask scattered into the union, tokens a member must spell
   checked, every member's grammar advanced) against the whole fused step (Timing.constrain_s);
3. the grammar libraries on the member's tokenizer: llguidance (used) and, where installed, xgrammar, per
   mask of a tool-call grammar.

    python benchmarks/constraint_cost.py [--member qwen05] [--fusion smollm2,gemma3] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from ensemble_core import Ensemble
from ensemble_core.asyncio_bridge import run_sync
from ensemble_core.members.hf import constraints
from ensemble_core.members.packaged import PACKAGED
from ensemble_core.strategies import TokenFusion
from ensemble_core.types import Message, Request, ResponseFormat, ToolSpec

TOOL = ToolSpec(
    name="book_flight",
    description="Book a flight.",
    parameters={
        "type": "object",
        "properties": {
            "origin": {"type": "string"},
            "destination": {"type": "string"},
            "passengers": {"type": "integer"},
            "class": {"enum": ["economy", "business"]},
        },
        "required": ["origin", "destination", "passengers", "class"],
    },
)
PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}, "city": {"type": "string"}},
    "required": ["name", "age", "city"],
}
QUESTION = "Book two business seats from Paris to Tokyo."
EXTRACT = "Extract the person: Alice Martin is 31 years old and lives in Paris."


class Timed:
    """Wraps `RowConstraints.__call__` to add up the time it takes."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls = 0
        self.original: Any = constraints.RowConstraints.__call__

    def __enter__(self) -> Timed:
        original = self.original
        timer = self

        def timed(processor: Any, input_ids: Any, scores: Any) -> Any:
            start = time.perf_counter()
            out = original(processor, input_ids, scores)
            timer.seconds += time.perf_counter() - start
            timer.calls += 1
            return out

        constraints.RowConstraints.__call__ = timed  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        constraints.RowConstraints.__call__ = self.original  # type: ignore[method-assign]


def member_cost(name: str, repeats: int) -> None:
    member = PACKAGED[name]()
    member.load()
    cases = {
        "forced tool call": Request(
            messages=[Message(role="user", content=QUESTION)],
            tools=[TOOL],
            tool_choice="book_flight",
            params={"max_tokens": 64},
        ),
        "json schema": Request(
            messages=[Message(role="user", content=EXTRACT)],
            response_format=ResponseFormat(type="json_schema", json_schema=PERSON),
            params={"max_tokens": 48},
        ),
    }
    for label, request in cases.items():
        best: tuple[float, float, int] | None = None
        for _ in range(repeats):
            prefill = member.generate(request.with_params(max_tokens=1))  # the prompt's cost, alone
            with Timed() as timer:
                start = time.perf_counter()
                generation = member.generate(request)
                total = time.perf_counter() - start
            decode = max(total - prefill.latency_s, 1e-9)
            tokens = max(generation.usage.output_tokens, 1)
            if best is None or decode < best[0]:
                best = (decode, timer.seconds, tokens)
        assert best is not None
        decode, constrained, tokens = best
        print(
            f"{name} {label}: {tokens} tokens, decode step {1000 * decode / tokens:.1f} ms, constraint "
            f"{1000 * constrained / tokens:.2f} ms/token = {100 * constrained / decode:.2f}% of a step; "
            f"answer {generation.tool_calls or generation.text!r}",
            flush=True,
        )
    library_cost(member)


def library_cost(member: Any) -> None:
    """Per-mask cost of the tool-call grammar in llguidance, and in xgrammar where it is installed."""
    lm = member.loaded()
    request = Request(messages=[Message(role="user", content="x")], tools=[TOOL], tool_choice="book_flight")
    call = '<tool_call>\n{"name": "book_flight", "arguments": {"origin": "Paris", "destination": "Tokyo", '
    call += '"passengers": 2, "class": "business"}}\n</tool_call>'
    ids = lm.encode_continuation(call)
    constraint = constraints.constraint_for(lm.tokenizer, lm.vocab_width, lm.eos_ids(), request)
    assert constraint is not None
    start = time.perf_counter()
    for i in ids:
        assert bool(constraint.allowed()[i])
        constraint.advance([i])
    print(
        f"llguidance: {1000 * (time.perf_counter() - start) / len(ids):.3f} ms per mask and step", flush=True
    )
    try:
        import xgrammar as xgr
    except ImportError:
        print("xgrammar: not installed (pip install xgrammar to compare)")
        return
    info = xgr.TokenizerInfo.from_huggingface(
        lm.tokenizer, vocab_size=lm.vocab_width, stop_token_ids=lm.eos_ids()
    )
    schema = constraints._call_schema(TOOL)
    schema.pop("x-guidance")
    grammar = xgr.Grammar.concat(
        xgr.Grammar.from_ebnf('root ::= "<tool_call>\\n"'),
        xgr.Grammar.from_json_schema(json.dumps(schema), any_whitespace=False),
        xgr.Grammar.from_ebnf('root ::= "\\n</tool_call>"'),
    )
    matcher = xgr.GrammarMatcher(xgr.GrammarCompiler(info).compile_grammar(grammar))
    bitmask = xgr.allocate_token_bitmask(1, lm.vocab_width)
    import torch

    scores = torch.zeros(1, lm.vocab_width)
    start = time.perf_counter()
    for i in ids:
        matcher.fill_next_token_bitmask(bitmask)
        xgr.apply_token_bitmask_inplace(scores, bitmask)
        matcher.accept_token(i)
    print(f"xgrammar: {1000 * (time.perf_counter() - start) / len(ids):.3f} ms per mask and step", flush=True)


def fusion_cost(names: list[str]) -> None:
    members = [PACKAGED[n]() for n in names]
    for m in members:
        m.load()
    ensemble = Ensemble(members, TokenFusion())
    cases = {
        "forced tool call": ensemble.request(
            QUESTION, tools=[TOOL], tool_choice="book_flight", max_tokens=64
        ),
        "json schema": ensemble.request(EXTRACT, max_tokens=48).model_copy(
            update={"response_format": ResponseFormat(type="json_schema", json_schema=PERSON)}
        ),
    }
    for label, request in cases.items():
        result = run_sync(ensemble.arun_request(request))
        timing = result.trace.details["timing"]
        steps = max(timing["steps"], 1)
        step_s = (
            sum(timing["forward_s"].values()) + timing["mix_s"] + timing["feed_s"] + timing["constrain_s"]
        )
        share = 100 * timing["constrain_s"] / step_s
        print(
            f"token fusion {'+'.join(names)} ({result.trace.details['tokenizers']}) {label}: {steps} steps, "
            f"fused step {1000 * step_s / steps:.1f} ms, union-vocabulary constraint "
            f"{1000 * timing['constrain_s'] / steps:.2f} ms/step = {share:.2f}%; "
            f"answer {result.tool_calls or result.text!r}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--member", default="qwen05")
    parser.add_argument("--fusion", default="smollm2,gemma3")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    member_cost(args.member, args.repeats)
    fusion_cost(args.fusion.split(","))


if __name__ == "__main__":
    main()
