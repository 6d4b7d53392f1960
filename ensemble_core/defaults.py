"""The embedded default ensemble: the packaged models (`members.packaged`) and the strategy that answers
when nothing else is configured (`scripts/ask`, `EnsembleChatModel()`, `EnsembleLLM()`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ensemble_core.ensemble import Ensemble
from ensemble_core.errors import ConfigError
from ensemble_core.members.base import Member
from ensemble_core.members.packaged import gemma3, smollm2
from ensemble_core.strategies.base import Strategy

DEFAULT_STRATEGY = "fallback"


def default_members(**kwargs: Any) -> list[Member]:
    """[smollm2, gemma3], cheapest first. Weights load lazily on first use; kwargs (device, dtype) go to
    both."""
    return [smollm2(**kwargs), gemma3(**kwargs)]


def default_ensemble(strategy: str | None = None, **strategy_params: Any) -> Ensemble:
    """The default members with the default strategy (or the one named)."""
    return Ensemble(default_members(), strategy or DEFAULT_STRATEGY, **strategy_params)


def resolve_ensemble(
    ensemble: Ensemble | None = None,
    members: Sequence[Member] | None = None,
    strategy: Strategy | str | None = None,
    strategy_params: Mapping[str, Any] | None = None,
) -> Ensemble:
    """The ensemble an adapter (or the service) answers with: the one given, one built from members and a
    strategy (default: `DEFAULT_STRATEGY`), or, with neither, the embedded default ensemble."""
    params = dict(strategy_params or {})
    if ensemble is not None:
        if members is not None or strategy is not None or params:
            raise ConfigError(
                "pass either ensemble=... or members=[...] with strategy=...: an Ensemble has its own "
                "members and strategy"
            )
        return ensemble
    if members is not None:
        if not members:
            raise ConfigError("members=[] is empty: pass at least one member, or leave members out")
        if isinstance(strategy, Strategy):
            if params:
                raise ConfigError("strategy_params go with a strategy name; a Strategy instance has its own")
            return Ensemble(list(members), strategy)
        return Ensemble(list(members), strategy or DEFAULT_STRATEGY, **params)
    if isinstance(strategy, Strategy):
        return Ensemble(default_members(), strategy)
    return default_ensemble(strategy, **params)
