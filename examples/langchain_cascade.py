"""A cascade behind a LangChain chat model: the cheap member answers first and the expensive one is asked only
when the cheap answer's confidence is under the threshold. The ensemble trace in `response_metadata` says who
was asked, each score and threshold, what was chosen and why, and tokens, latency and cost per member.

    python examples/langchain_cascade.py                      # a lenient and a strict threshold
    python examples/langchain_cascade.py --thresholds -0.5 "What is the capital of Italy?"
"""

from __future__ import annotations

import argparse
from typing import Any

from langchain_core.messages import AIMessage

from ensemble_core import Ensemble, Price
from ensemble_core.members.packaged import gemma3, smollm2
from langchain_ensemble import EnsembleChatModel

QUESTION = "What is the capital of France?"


def build_model(threshold: float, max_tokens: int) -> EnsembleChatModel:
    """SmolLM2 priced as the cheap member, Gemma 3 as the expensive one; mean log-probability confidence."""
    cheap = smollm2(price=Price(input_per_token=1e-7, output_per_token=2e-7))
    expensive = gemma3(price=Price(input_per_token=1e-6, output_per_token=2e-6))
    ensemble = Ensemble([cheap, expensive], "cascade", scorer="mean-logprob", thresholds=[threshold])
    return EnsembleChatModel(ensemble=ensemble, max_tokens=max_tokens)


def print_trace(message: AIMessage) -> None:
    trace: dict[str, Any] = message.response_metadata["ensemble_trace"]
    print(f"strategy: {trace['strategy']}   chosen: {trace['chosen']}   reason: {trace['reason']}")
    for call in trace["calls"]:
        status = "ok" if call["ok"] else f"failed: {call['error']}"
        score = "" if call["score"] is None else f" score={call['score']:.3f}"
        usage = call["usage"]
        print(
            f"  {call['member']:<8} {call['role']:<8} {status}{score} tokens={usage['input_tokens']}+"
            f"{usage['output_tokens']} latency={call['latency_s']:.2f}s cost=${call['cost']:.7f}"
        )
    for step in trace["details"].get("steps", []):
        score = "" if step["score"] is None else f" score={step['score']:.3f}"
        threshold = "" if step["threshold"] is None else f" threshold={step['threshold']:.3f}"
        print(f"  step {step['member']}: {step['decision']}{score}{threshold} ({step['why']})")
    print(f"usage over every member call: {message.usage_metadata}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("question", nargs="?", default=QUESTION)
    parser.add_argument(
        "--thresholds",
        type=float,
        nargs="+",
        default=[-1.0, -0.05],
        help="one run per threshold: the cheap answer is accepted when its mean log-probability reaches it",
    )
    parser.add_argument("--max-tokens", type=int, default=24)
    args = parser.parse_args(argv)

    for threshold in args.thresholds:
        message = build_model(threshold, args.max_tokens).invoke(args.question)
        print(f"[threshold {threshold}]\nQ: {args.question}\nA: {message.content}\n")
        print_trace(message)
        print()


if __name__ == "__main__":
    main()
