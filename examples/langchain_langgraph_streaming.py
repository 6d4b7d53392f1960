"""A LangGraph graph whose node is an ensemble, streaming its tokens with `stream_mode="messages"`.

Tokens reach the graph's stream as the ensemble's strategy decides them (not after the answer is complete),
each tagged with the node that produced it; runs offline.

    python examples/langchain_langgraph_streaming.py
    python examples/langchain_langgraph_streaming.py --max-tokens 64 "Describe a lighthouse."
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator

from langchain_core.language_models import BaseChatModel
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.graph.state import CompiledStateGraph

from ensemble_core.defaults import default_ensemble
from langchain_ensemble import EnsembleChatModel

QUESTION = "Tell me about Paris in two sentences."


def build_graph(model: BaseChatModel) -> CompiledStateGraph:
    """START -> answer -> END; the `answer` node asks the model with the conversation so far."""

    def answer(state: MessagesState) -> dict[str, list]:
        return {"messages": [model.invoke(state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("answer", answer)
    graph.add_edge(START, "answer")
    graph.add_edge("answer", END)
    return graph.compile()


def stream_tokens(graph: CompiledStateGraph, question: str) -> Iterator[tuple[str, str]]:
    """(node, token) pairs as the graph streams them."""
    inputs = {"messages": [{"role": "user", "content": question}]}
    for chunk, metadata in graph.stream(inputs, stream_mode="messages"):
        if chunk.text:
            yield metadata["langgraph_node"], chunk.text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("question", nargs="?", default=QUESTION)
    parser.add_argument("--strategy", help="a registered strategy name (default: the default ensemble's)")
    parser.add_argument("--max-tokens", type=int, default=48)
    args = parser.parse_args(argv)

    graph = build_graph(
        EnsembleChatModel(ensemble=default_ensemble(args.strategy), max_tokens=args.max_tokens)
    )
    print(f"Q: {args.question}\nA: ", end="")
    count = 0
    for _node, token in stream_tokens(graph, args.question):
        print(token, end="", flush=True)
        count += 1
    print(f"\n({count} streamed pieces)")


if __name__ == "__main__":
    main()
