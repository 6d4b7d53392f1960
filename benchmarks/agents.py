"""Agents and structured output on real packaged models: ten small tool tasks through LangChain's
`create_agent` (the right tool called, the right final answer) and ten short extraction texts through
`with_structured_output(Person)` (a valid Person every time, the right fields). Prints the success counts per
ensemble, and each miss, so docs/RESULTS.md can quote them.

    python benchmarks/agents.py [--ensembles default,fallback,cascade] [--tasks 10] [--texts 10]

`default` is `EnsembleChatModel()`; `fallback` and `cascade` are qwen05 then qwen15 with that strategy.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from langchain.agents import create_agent
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.errors import GraphRecursionError
from pydantic import BaseModel, Field

from langchain_ensemble import EnsembleChatModel

RECURSION_LIMIT = 6
ROOMS = {"alice": "204", "bob": "117", "carol": "311", "dave": "509"}


@tool
def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@tool
def lookup(name: str) -> str:
    """Look up the office room of an employee by first name."""
    room = ROOMS.get(name.strip().lower())
    return f"{name} works in room {room}." if room else f"No employee called {name}."


TOOLS = [multiply, add, lookup]
# (question, the tool that must be called, text the final answer must contain)
TASKS = [
    ("What is 17 times 23?", "multiply", "391"),
    ("What is 1234 plus 5678?", "add", "6912"),
    ("In which room does Alice work?", "lookup", "204"),
    ("Multiply 12 by 14.", "multiply", "168"),
    ("Add 45 and 97.", "add", "142"),
    ("What is Bob's office room?", "lookup", "117"),
    ("What is 19 times 21?", "multiply", "399"),
    ("What is 250 plus 775?", "add", "1025"),
    ("Which room is Carol in?", "lookup", "311"),
    ("What is the product of 31 and 33?", "multiply", "1023"),
]


class Person(BaseModel):
    """A person mentioned in a text."""

    name: str = Field(description="the person's full name")
    age: int = Field(description="the person's age in years")
    city: str = Field(description="the city the person lives in")


TEXTS = [
    ("Alice Martin is 31 years old and lives in Paris.", Person(name="Alice Martin", age=31, city="Paris")),
    ("Bob Chen, 45, has lived in Toronto all his life.", Person(name="Bob Chen", age=45, city="Toronto")),
    ("At 27, Carla Diaz moved to Madrid.", Person(name="Carla Diaz", age=27, city="Madrid")),
    ("Tokyo resident Kenji Sato turned 52 this year.", Person(name="Kenji Sato", age=52, city="Tokyo")),
    (
        "Meet Olga Petrova: 38 years old, living in Moscow.",
        Person(name="Olga Petrova", age=38, city="Moscow"),
    ),
    ("David Smith (60) lives in London.", Person(name="David Smith", age=60, city="London")),
    (
        "Priya Sharma is a 24-year-old engineer from Mumbai.",
        Person(name="Priya Sharma", age=24, city="Mumbai"),
    ),
    ("Lukas Weber, aged 33, lives in Berlin.", Person(name="Lukas Weber", age=33, city="Berlin")),
    ("Sofia Rossi lives in Rome; she is 29.", Person(name="Sofia Rossi", age=29, city="Rome")),
    ("John Doe is 41 and his home is in Chicago.", Person(name="John Doe", age=41, city="Chicago")),
]


def chat_model(which: str) -> EnsembleChatModel:
    from ensemble_core.members.packaged import qwen05, qwen15

    if which == "default":
        return EnsembleChatModel(max_tokens=48)
    members = [qwen05(), qwen15()]
    return EnsembleChatModel(members=members, strategy=which, max_tokens=48)


def run_task(agent: Any, question: str, tool_name: str, expected: str) -> tuple[bool, bool, str]:
    """(right tool called, right final answer, what happened); an agent still calling tools after
    `RECURSION_LIMIT` graph steps (two calls and their answers) has missed."""
    try:
        state = agent.invoke(
            {"messages": [{"role": "user", "content": question}]}, {"recursion_limit": RECURSION_LIMIT}
        )
    except GraphRecursionError:
        return False, False, f"still calling tools after {RECURSION_LIMIT} steps"
    messages = state["messages"]
    called = [c["name"] for m in messages if isinstance(m, AIMessage) for c in m.tool_calls]
    results = [m.content for m in messages if isinstance(m, ToolMessage)]
    final = messages[-1].text if isinstance(messages[-1], AIMessage) else ""
    right_tool = bool(called) and called[0] == tool_name
    right_answer = right_tool and expected in final.replace(",", "")
    return right_tool, right_answer, f"calls={called} results={results} final={final[:100]!r}"


def fields_right(found: Any, expected: Person) -> bool:
    return (
        isinstance(found, Person)
        and found.age == expected.age
        and found.name.strip().lower() == expected.name.lower()
        and found.city.strip().lower() == expected.city.lower()
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ensembles", default="default,fallback,cascade")
    parser.add_argument("--tasks", type=int, default=len(TASKS))
    parser.add_argument("--texts", type=int, default=len(TEXTS))
    args = parser.parse_args()
    for which in args.ensembles.split(","):
        model = chat_model(which)
        print(f"== {which}: {model.model_name}", flush=True)
        agent = create_agent(model, TOOLS)
        tools_ok = answers_ok = 0
        start = time.perf_counter()
        for question, tool_name, expected in TASKS[: args.tasks]:
            right_tool, right_answer, what = run_task(agent, question, tool_name, expected)
            tools_ok += right_tool
            answers_ok += right_answer
            print(f"  agent {'ok ' if right_answer else 'MISS'} {question!r}: {what}", flush=True)
        agent_s = time.perf_counter() - start
        structured = model.with_structured_output(Person, include_raw=True)
        valid = right = 0
        start = time.perf_counter()
        for text, expected in TEXTS[: args.texts]:
            out = structured.invoke(f"Extract the person from this text: {text}")
            parsed = out["parsed"]
            valid += isinstance(parsed, Person)
            right += fields_right(parsed, expected)
            status = "ok " if fields_right(parsed, expected) else "MISS"
            print(f"  extract {status} {text!r}: {parsed!r} error={out['parsing_error']}", flush=True)
        extract_s = time.perf_counter() - start
        print(
            f"RESULT {which}: agent right tool {tools_ok}/{args.tasks}, "
            f"right answer {answers_ok}/{args.tasks} "
            f"({agent_s:.0f} s); extraction valid {valid}/{args.texts}, fields right {right}/{args.texts} "
            f"({extract_s:.0f} s)",
            flush=True,
        )


if __name__ == "__main__":
    main()
