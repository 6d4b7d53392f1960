"""Strategies: how an ensemble turns one request into one answer. `from ensemble_core.strategies import X`
imports any registered strategy class by its class name."""

from __future__ import annotations

from importlib import import_module
from typing import Any

from ensemble_core.strategies.base import Strategy
from ensemble_core.strategies.registry import (
    STRATEGIES,
    build_strategy,
    class_path,
    strategy_class,
    strategy_names,
)

__all__ = ["STRATEGIES", "Strategy", "build_strategy", "strategy_class", "strategy_names"]


def __getattr__(name: str) -> Any:
    path = class_path(name)
    if path is None:
        raise AttributeError(f"module 'ensemble_core.strategies' has no attribute {name!r}")
    module, _, attr = path.partition(":")
    return getattr(import_module(module), attr)
