"""Agents and structured output on real packaged models: small tool tasks through LangChain's `create_agent`
(the right tool called, the right final answer), three two-step tasks, and ten short extraction texts through
`with_structured_output(Person)` (a valid Person every time, the right fields). Prints the success counts per
ensemble, and each miss, so docs/RESULTS.md can quote them.

    python benchmarks/agents.py [--ensembles default,fallback,cascade]
        [--sets dev,held-out,two-step,extraction] [--tasks 10] [--texts 10]

The ten dev tasks are the ones the agent loop was looked at on while it was built; the ten held-out tasks
were written afterwards and only measured; a two-step task needs a second call that uses the first's result.
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
# (question, the tool that must be called, text the final answer must contain). DEV_TASKS are the ones the
# agent loop was looked at on while it was built; HELD_OUT_TASKS were written afterwards and only measured.
DEV_TASKS = [
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
HELD_OUT_TASKS = [
    ("What is 26 times 18?", "multiply", "468"),
    ("What do you get when you add 389 and 244?", "add", "633"),
    ("Where is Dave's office?", "lookup", "509"),
    ("Compute 15 multiplied by 37.", "multiply", "555"),
    ("Sum 1200 and 345.", "add", "1545"),
    ("Find the room of Alice.", "lookup", "204"),
    ("How much is 43 times 11?", "multiply", "473"),
    ("What is 999 plus 1?", "add", "1000"),
    ("Which office is Bob in?", "lookup", "117"),
    ("What is 64 times 25?", "multiply", "1600"),
]
# Two calls in a row (the second uses the first's result): (question, the tools in order, the final answer).
TWO_STEP_TASKS = [
    ("Multiply 6 by 7, then add 10 to the result.", ("multiply", "add"), "52"),
    ("Add 15 and 27, then multiply the sum by 3.", ("add", "multiply"), "126"),
    ("What is Carol's room number plus 100?", ("lookup", "add"), "411"),
]
TASK_SETS = {"dev": DEV_TASKS, "held-out": HELD_OUT_TASKS}


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


def run_task(
    agent: Any, question: str, tools: tuple[str, ...], expected: str, limit: int = RECURSION_LIMIT
) -> tuple[bool, bool, str]:
    """(right tools called first, right final answer, what happened); an agent still calling tools after
    `limit` graph steps has missed."""
    try:
        state = agent.invoke(
            {"messages": [{"role": "user", "content": question}]}, {"recursion_limit": limit}
        )
    except GraphRecursionError:
        return False, False, f"still calling tools after {limit} steps"
    messages = state["messages"]
    called = [c["name"] for m in messages if isinstance(m, AIMessage) for c in m.tool_calls]
    results = [m.content for m in messages if isinstance(m, ToolMessage)]
    final = messages[-1].text if isinstance(messages[-1], AIMessage) else ""
    right_tool = tuple(called[: len(tools)]) == tools
    right_answer = right_tool and expected in final.replace(",", "")
    return right_tool, right_answer, f"calls={called} results={results} final={final[:100]!r}"


def fields_right(found: Any, expected: Person) -> bool:
    return (
        isinstance(found, Person)
        and found.age == expected.age
        and found.name.strip().lower() == expected.name.lower()
        and found.city.strip().lower() == expected.city.lower()
    )


def run_tasks(agent: Any, label: str, tasks: list[tuple[str, tuple[str, ...], str]], limit: int) -> str:
    """Each task through the agent, one line per task; returns the counts as a phrase."""
    tools_ok = answers_ok = 0
    start = time.perf_counter()
    for question, tools, expected in tasks:
        right_tool, right_answer, what = run_task(agent, question, tools, expected, limit)
        tools_ok += right_tool
        answers_ok += right_answer
        print(f"  {label} {'ok ' if right_answer else 'MISS'} {question!r}: {what}", flush=True)
    return (
        f"{label}: right tool {tools_ok}/{len(tasks)}, right answer {answers_ok}/{len(tasks)} "
        f"({time.perf_counter() - start:.0f} s)"
    )


def run_extraction(model: EnsembleChatModel, texts: list[tuple[str, Person]]) -> str:
    """Each text through `with_structured_output(Person)`; returns the counts as a phrase."""
    structured = model.with_structured_output(Person, include_raw=True)
    valid = right = 0
    start = time.perf_counter()
    for text, expected in texts:
        out = structured.invoke(f"Extract the person from this text: {text}")
        parsed = out["parsed"]
        valid += isinstance(parsed, Person)
        right += fields_right(parsed, expected)
        status = "ok " if fields_right(parsed, expected) else "MISS"
        print(f"  extract {status} {text!r}: {parsed!r} error={out['parsing_error']}", flush=True)
    return (
        f"extraction valid {valid}/{len(texts)}, fields right {right}/{len(texts)} "
        f"({time.perf_counter() - start:.0f} s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ensembles", default="default,fallback,cascade")
    parser.add_argument(
        "--sets", default="dev,held-out,two-step,extraction", help="which of these to run, comma-separated"
    )
    parser.add_argument("--tasks", type=int, default=len(DEV_TASKS), help="the first N of each task set")
    parser.add_argument("--texts", type=int, default=len(TEXTS))
    args = parser.parse_args()
    sets = args.sets.split(",")
    for which in args.ensembles.split(","):
        model = chat_model(which)
        print(f"== {which}: {model.model_name}", flush=True)
        agent = create_agent(model, TOOLS)
        results = [
            run_tasks(
                agent, name, [(q, (t,), e) for q, t, e in TASK_SETS[name][: args.tasks]], RECURSION_LIMIT
            )
            for name in TASK_SETS
            if name in sets
        ]
        if "two-step" in sets:
            results.append(run_tasks(agent, "two-step", TWO_STEP_TASKS, RECURSION_LIMIT + 2))
        if "extraction" in sets:
            results.append(run_extraction(model, TEXTS[: args.texts]))
        print(f"RESULT {which}: " + "; ".join(results), flush=True)


if __name__ == "__main__":
    main()
