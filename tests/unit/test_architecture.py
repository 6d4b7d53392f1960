"""The layering in docs/architecture.md, checked from the code's own imports: no import cycle inside the
engine (function-level imports included), and the layer contracts of pyproject.toml hold."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[2]


def _cycles(graph: grimp.ImportGraph, modules: set[str]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), i.e. the import cycles."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in graph.find_modules_directly_imported_by(module) & modules:
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(modules):
        if module not in index:
            visit(module)
    return found


def test_no_import_cycle_inside_the_engine():
    graph = grimp.build_graph("ensemble_core")
    # A package's __init__ re-exports its children; cycles through re-exports are not layering cycles.
    modules = {m for m in graph.modules if not graph.find_children(m)}
    assert _cycles(graph, modules) == []


def test_nothing_in_scoring_imports_strategies_and_the_engine_imports_no_adapter():
    graph = grimp.build_graph("ensemble_core", "langchain_ensemble", "llamaindex_ensemble")
    assert not graph.find_illegal_dependencies_for_layers(
        layers=["ensemble_core.strategies", "ensemble_core.scoring"], containers=set()
    )
    for adapter in ("langchain_ensemble", "llamaindex_ensemble"):
        assert not graph.chain_exists(importer="ensemble_core", imported=adapter, as_packages=True)


def test_the_import_contracts_hold():
    linter = Path(sys.executable).parent / "lint-imports"
    done = subprocess.run([str(linter), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
