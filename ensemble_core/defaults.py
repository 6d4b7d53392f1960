"""The embedded default ensemble, used when nothing else is configured (`scripts/ask`, `EnsembleChatModel()`,
`EnsembleLLM()`): Qwen2.5-Coder 0.5B drafting for 1.5B (`speculative`). Measured in docs/RESULTS.md: qwen15
is the most accurate packaged member on short factual answers and no combination beat it there, and
speculative decoding gives its answers at about 1.5x its speed; tool calls and JSON schemas are qwen15's
alone under a grammar. The smaller pair of different tokenizers stays at hand as `small_members()`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ensemble_core.ensemble import Ensemble
from ensemble_core.errors import ConfigError
from ensemble_core.members.base import Member
from ensemble_core.members.packaged import gemma3, qwen05, qwen15, smollm2
from ensemble_core.strategies.base import Strategy

DEFAULT_STRATEGY = "fallback"
"""The strategy of members given without one: it works with any members."""
DEFAULT_ENSEMBLE_STRATEGY = "speculative"
"""The embedded default ensemble's strategy (qwen05 drafts, qwen15 verifies)."""


def default_members(**kwargs: Any) -> list[Member]:
    """[qwen05, qwen15], cheapest first (the drafter, then the verifier). Weights load lazily on first use;
    kwargs (device, dtype) go to both."""
    return [qwen05(**kwargs), qwen15(**kwargs)]


def small_members(**kwargs: Any) -> list[Member]:
    """[smollm2, gemma3]: 135M and 270M models with different tokenizers (the hard case for token fusion),
    a few seconds to load; kwargs go to both."""
    return [smollm2(**kwargs), gemma3(**kwargs)]


def default_ensemble(strategy: str | None = None, **strategy_params: Any) -> Ensemble:
    """The default members with their strategy (`DEFAULT_ENSEMBLE_STRATEGY`), or the one named."""
    return Ensemble(default_members(), strategy or DEFAULT_ENSEMBLE_STRATEGY, **strategy_params)


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
