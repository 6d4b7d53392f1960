"""Token-level fusion of the two default models, streamed as it is decided; runs offline.

SmolLM2 (49k vocabulary, chat template) and Gemma 3 (262k vocabulary, a base model) mix their next-token
distributions at every step through a union vocabulary; the weights come from each model's perplexity on the
prompt (PackLLM-sim). The trace says the weights and how often each model agreed with the chosen token.

    python examples/streaming_fusion.py
    python examples/streaming_fusion.py --weights uniform --max-tokens 48 "Describe a lighthouse."
"""

from __future__ import annotations

import argparse

from ensemble_core import Ensemble
from ensemble_core.defaults import small_members
from ensemble_core.strategies import TokenFusion

QUESTION = "What is the capital of France, and what is it known for?"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("question", nargs="?", default=QUESTION)
    parser.add_argument("--weights", default="packllm-sim", choices=["uniform", "packllm-sim", "packllm-opt"])
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args(argv)

    ensemble = Ensemble(small_members(), TokenFusion(weights=args.weights))
    print(f"Q: {args.question}\nA: ", end="", flush=True)
    for delta in ensemble.stream(args.question, max_tokens=args.max_tokens):
        print(delta.text, end="", flush=True)
        if delta.final:
            details = delta.trace.details
            print(f"\n\nweights: {details.get('weights')}")
            print(f"agreement with the chosen token: {details.get('agreement')}")
            print(f"tokens: {delta.usage.input_tokens} in, {delta.usage.output_tokens} out")


if __name__ == "__main__":
    main()
