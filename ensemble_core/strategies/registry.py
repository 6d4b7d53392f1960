"""The strategy registry: public name -> class. A new strategy is one module and one line here."""

from __future__ import annotations

from importlib import import_module
from typing import Any

from pydantic import ValidationError

from ensemble_core.errors import ConfigError, UnknownStrategyError
from ensemble_core.strategies.base import Strategy

STRATEGIES: dict[str, str] = {
    "single": "ensemble_core.strategies.single:Single",
    "fallback": "ensemble_core.strategies.fallback:Fallback",
    "cascade": "ensemble_core.strategies.cascade:Cascade",
    "rank-and-fuse": "ensemble_core.strategies.rank_and_fuse:RankAndFuse",
    "vote": "ensemble_core.strategies.vote:Vote",
    "mbr": "ensemble_core.strategies.mbr:MBR",
    "mixture-of-agents": "ensemble_core.strategies.mixture_of_agents:MixtureOfAgents",
    "span-fusion": "ensemble_core.strategies.span_fusion:SpanFusion",
    "step-fusion": "ensemble_core.strategies.step_fusion:StepFusion",
    "token-fusion": "ensemble_core.strategies.token_fusion:TokenFusion",
    "contrastive": "ensemble_core.strategies.contrastive:Contrastive",
    "speculative": "ensemble_core.strategies.speculative:Speculative",
    "rule-router": "ensemble_core.strategies.rule_router:RuleRouter",
    "semantic-router": "ensemble_core.strategies.semantic_router:SemanticRouter",
    "perplexity-router": "ensemble_core.strategies.perplexity_router:PerplexityRouter",
    "learned-router": "ensemble_core.strategies.learned_router:LearnedRouter",
}


def strategy_names() -> list[str]:
    return sorted(STRATEGIES)


def strategy_class(name: str) -> type[Strategy]:
    """The class registered under `name`; an unknown name lists the known ones."""
    try:
        module, _, attr = STRATEGIES[name].partition(":")
    except KeyError:
        raise UnknownStrategyError(name, list(STRATEGIES)) from None
    return getattr(import_module(module), attr)


def class_path(class_name: str) -> str | None:
    """The registry entry of a strategy class by its class name (for `from ensemble_core.strategies import
    X`)."""
    for path in STRATEGIES.values():
        if path.rpartition(":")[2] == class_name:
            return path
    return None


def build_strategy(name: str, params: dict[str, Any] | None = None) -> Strategy:
    """Instantiate a registered strategy; invalid parameters name the field and what is allowed."""
    cls = strategy_class(name)
    try:
        return cls(**(params or {}))
    except ValidationError as err:
        raise ConfigError(describe_validation_error(err, prefix=f"strategy {name!r}")) from err


def describe_validation_error(err: ValidationError, prefix: str) -> str:
    """One line per problem: the field path, what is wrong, and the allowed values where pydantic knows
    them."""
    lines = []
    for problem in err.errors():
        field = ".".join(str(p) for p in problem["loc"]) or "(root)"
        message = problem["msg"]
        expected = (problem.get("ctx") or {}).get("expected")
        if problem["type"] == "extra_forbidden":
            message = "unknown field (remove it or check its spelling)"
        if expected and expected not in message:
            message += f" (allowed: {expected})"
        lines.append(f"{prefix}: {field}: {message}")
    return "\n".join(lines)
