"""The embedded default ensemble: the packaged models (`members.packaged`) and the strategy that answers
when nothing else is configured (`scripts/ask`, `EnsembleChatModel()`, `EnsembleLLM()`)."""

from __future__ import annotations

from typing import Any

from ensemble_core.ensemble import Ensemble
from ensemble_core.members.base import Member
from ensemble_core.members.packaged import gemma3, smollm2

DEFAULT_STRATEGY = "fallback"


def default_members(**kwargs: Any) -> list[Member]:
    """[smollm2, gemma3], cheapest first. Weights load lazily on first use; kwargs (device, dtype) go to
    both."""
    return [smollm2(**kwargs), gemma3(**kwargs)]


def default_ensemble(strategy: str | None = None, **strategy_params: Any) -> Ensemble:
    """The default members with the default strategy (or the one named)."""
    return Ensemble(default_members(), strategy or DEFAULT_STRATEGY, **strategy_params)
