"""`langchain.agents.create_agent` with a tool, the model an ensemble; runs offline.

The agent loop is LangChain's own: the model may call `lookup_population`, the tool's answer goes back as a
ToolMessage, and the model answers. On the default ensemble a request with tools goes to qwen05, which
writes the call in its chat template's format under a grammar, so a call it starts is a valid one.

    python examples/langchain_agent.py
    python examples/langchain_agent.py --max-tokens 64 "How many people live in Oslo?"
"""

from __future__ import annotations

import argparse

from langchain.agents import create_agent
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.tools import tool

from ensemble_core.defaults import default_ensemble
from langchain_ensemble import EnsembleChatModel

QUESTION = "How many people live in Lyon? Use the lookup_population tool."
POPULATIONS = {"lyon": 522_250, "oslo": 709_037, "porto": 231_800}


@tool
def lookup_population(city: str) -> str:
    """Look up the number of people living in a city."""
    count = POPULATIONS.get(city.strip().lower())
    return f"{city} has {count:,} inhabitants." if count else f"No population figure for {city}."


def run_agent(model: BaseChatModel, question: str) -> list[BaseMessage]:
    """Every message of the agent's run: the question, tool calls, tool results and the answer."""
    agent = create_agent(
        model, tools=[lookup_population], system_prompt="Answer briefly. Use tools for facts."
    )
    return agent.invoke({"messages": [{"role": "user", "content": question}]})["messages"]


def print_messages(messages: list[BaseMessage]) -> None:
    for message in messages:
        if isinstance(message, AIMessage) and message.tool_calls:
            calls = ", ".join(f"{c['name']}({c['args']})" for c in message.tool_calls)
            print(f"[{message.type}] calls {calls}")
        else:
            print(f"[{message.type}] {message.text}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("question", nargs="?", default=QUESTION)
    parser.add_argument("--strategy", help="a registered strategy name (default: the default ensemble's)")
    parser.add_argument("--max-tokens", type=int, default=48)
    args = parser.parse_args(argv)

    model = EnsembleChatModel(ensemble=default_ensemble(args.strategy), max_tokens=args.max_tokens)
    print_messages(run_agent(model, args.question))


if __name__ == "__main__":
    main()
