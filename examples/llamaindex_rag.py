"""RAG over a few documents with LlamaIndex, answered by an ensemble; runs offline.

documents -> VectorStoreIndex (embed_model: the packaged all-MiniLM-L6-v2) -> as_query_engine(llm=EnsembleLLM)
queried three ways: sync, async and streaming. Each answer is printed with the source nodes it was built from.

    python examples/llamaindex_rag.py
    python examples/llamaindex_rag.py --strategy single --max-tokens 48 "When was the observatory founded?"
"""

from __future__ import annotations

import argparse
import asyncio

from llama_index.core import Document, VectorStoreIndex
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.base.response.schema import Response, StreamingResponse
from llama_index.core.llms.llm import LLM

from ensemble_core.defaults import default_ensemble
from llamaindex_ensemble import EnsembleLLM, default_embed_model

DOCUMENTS = {
    "observatory": (
        "The Larkspur Observatory stands on Mount Orrin. It was founded in 1897 by the astronomer Helen "
        "Marsh, who built its first telescope with money raised by the town's apple growers."
    ),
    "festival": (
        "Every October the town of Larkspur holds the Lantern Festival. Children carry paper lanterns shaped "
        "like comets up the hill to the observatory, and the night ends with a bonfire."
    ),
    "railway": (
        "The Larkspur narrow-gauge railway opened in 1912. Its steam engine, nicknamed Old Bess, pulled "
        "apple wagons to the harbour until the line closed in 1961."
    ),
    "cheese": (
        "Larkspur blue is a soft cheese made from sheep's milk in the valley below Mount Orrin. It ripens "
        "for eight weeks in limestone caves."
    ),
}

QUESTION = "Who founded the Larkspur Observatory?"


def build_index(embed_model: BaseEmbedding | None = None) -> VectorStoreIndex:
    """One node per document, embedded with `embed_model` (default: the packaged MiniLM)."""
    documents = [Document(text=text, metadata={"title": title}) for title, text in DOCUMENTS.items()]
    return VectorStoreIndex.from_documents(documents, embed_model=embed_model or default_embed_model())


def ask(index: VectorStoreIndex, llm: LLM, question: str, top_k: int = 2) -> Response:
    return index.as_query_engine(llm=llm, similarity_top_k=top_k).query(question)


async def aask(index: VectorStoreIndex, llm: LLM, question: str, top_k: int = 2) -> Response:
    return await index.as_query_engine(llm=llm, similarity_top_k=top_k).aquery(question)


def ask_streaming(index: VectorStoreIndex, llm: LLM, question: str, top_k: int = 2) -> StreamingResponse:
    return index.as_query_engine(llm=llm, similarity_top_k=top_k, streaming=True).query(question)


def print_sources(response: Response | StreamingResponse) -> None:
    for node in response.source_nodes:
        print(f"  [{node.score:.2f}] {node.metadata['title']}: {node.get_content()[:70]}...")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("question", nargs="?", default=QUESTION)
    parser.add_argument("--strategy", help="a registered strategy name (default: the default ensemble's)")
    parser.add_argument("--max-tokens", type=int, default=48)
    args = parser.parse_args(argv)

    llm = EnsembleLLM(ensemble=default_ensemble(args.strategy), max_tokens=args.max_tokens)
    index = build_index()

    print(f"Q: {args.question}\n\n[sync]")
    response = ask(index, llm, args.question)
    print(response.response)
    print_sources(response)

    print("\n[async]")
    response = asyncio.run(aask(index, llm, args.question))
    print(response.response)
    print_sources(response)

    print("\n[streaming]")
    streaming = ask_streaming(index, llm, args.question)
    for text in streaming.response_gen:
        print(text, end="", flush=True)
    print()
    print_sources(streaming)


if __name__ == "__main__":
    main()
