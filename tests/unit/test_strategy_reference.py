from __future__ import annotations

from pathlib import Path

from ensemble_core.strategies.reference import strategy_reference
from ensemble_core.strategies.registry import strategy_names

DOC = Path(__file__).resolve().parents[2] / "docs" / "STRATEGIES.md"


def test_every_strategy_is_documented_with_its_parameters():
    text = strategy_reference()
    for name in strategy_names():
        assert f"## `{name}`" in text


def test_docs_strategies_md_is_the_generated_reference():
    assert DOC.read_text() == strategy_reference(), (
        "regenerate: llm-ensemble strategies --markdown > docs/STRATEGIES.md"
    )
