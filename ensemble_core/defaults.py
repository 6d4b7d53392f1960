"""The embedded default ensemble, used when nothing else is configured (`scripts/ask`, `EnsembleChatModel()`,
`EnsembleLLM()`): Qwen2.5-Coder 1.5B answers; in an agent loop 0.5B makes the call and 1.5B takes the turn
after the tools answered. Measured in docs/RESULTS.md: qwen15 is the most accurate packaged member on short
factual answers (and answers them faster alone than drafted for by qwen05); in agent loops qwen05 picks the
tool at a sixth of the cost but keeps calling tools after the answer is in, where qwen15 answers from the
results. The smaller pair of different tokenizers stays at hand as `small_members()`."""

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
DEFAULT_ENSEMBLE_STRATEGY = "rule-router"
"""The embedded default ensemble's strategy, with `DEFAULT_ENSEMBLE_PARAMS`."""
DEFAULT_ENSEMBLE_PARAMS: dict[str, Any] = {
    "rules": [{"has_tool_results": True, "member": "qwen15"}, {"has_tools": True, "member": "qwen05"}],
    "default": "qwen15",
}


def default_members(**kwargs: Any) -> list[Member]:
    """[qwen05, qwen15], cheapest first. Weights load lazily on first use; kwargs (device, dtype) go to
    both."""
    return [qwen05(**kwargs), qwen15(**kwargs)]


def small_members(**kwargs: Any) -> list[Member]:
    """[smollm2, gemma3]: 135M and 270M models with different tokenizers (the hard case for token fusion),
    a few seconds to load; kwargs go to both."""
    return [smollm2(**kwargs), gemma3(**kwargs)]


def default_ensemble(strategy: str | None = None, **strategy_params: Any) -> Ensemble:
    """The default members with their strategy (`DEFAULT_ENSEMBLE_STRATEGY`), or with the one named."""
    if strategy is None:
        return Ensemble(
            default_members(), DEFAULT_ENSEMBLE_STRATEGY, **{**DEFAULT_ENSEMBLE_PARAMS, **strategy_params}
        )
    return Ensemble(default_members(), strategy, **strategy_params)


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
