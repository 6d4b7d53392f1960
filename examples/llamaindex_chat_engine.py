"""A conversation over the same documents as llamaindex_rag.py, with a LlamaIndex chat engine answered by an
ensemble; runs offline. The engine rewrites each follow-up into a standalone question, retrieves for it and
answers with the retrieved context (chat_mode="condense_plus_context"); the second turn is streamed.

    python examples/llamaindex_chat_engine.py
"""

from __future__ import annotations

import argparse

from llama_index.core import VectorStoreIndex
from llama_index.core.chat_engine.types import BaseChatEngine
from llama_index.core.llms.llm import LLM
from llamaindex_rag import build_index, print_sources

from ensemble_core.defaults import default_ensemble
from llamaindex_ensemble import EnsembleLLM

TURNS = ["Who founded the Larkspur Observatory?", "What happens at the festival in October?"]


def chat_engine(index: VectorStoreIndex, llm: LLM, top_k: int = 2) -> BaseChatEngine:
    return index.as_chat_engine(chat_mode="condense_plus_context", llm=llm, similarity_top_k=top_k)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategy", help="a registered strategy name (default: the default ensemble's)")
    parser.add_argument("--max-tokens", type=int, default=48)
    args = parser.parse_args(argv)

    llm = EnsembleLLM(ensemble=default_ensemble(args.strategy), max_tokens=args.max_tokens)
    engine = chat_engine(build_index(), llm)

    first, follow_up = TURNS
    print(f"user: {first}")
    response = engine.chat(first)
    print(f"assistant: {response.response}")
    print_sources(response)

    print(f"\nuser: {follow_up}\nassistant: ", end="")
    streaming = engine.stream_chat(follow_up)
    for text in streaming.response_gen:
        print(text, end="", flush=True)
    print()
    print_sources(streaming)


if __name__ == "__main__":
    main()
