"""Strategy specs on the command line: `single:smollm2,choice-ensemble[weights=packllm-sim],cascade`.

A spec is a registered strategy name, `single:MEMBER`, or `choice-ensemble` (sequence-level ensembling of
choice scores, which lives in eval because it ranks given choices rather than answering a request), with
optional parameters in brackets: `name[key=value,key=value]` (values read as YAML)."""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from ensemble_core.errors import ConfigError, UnknownStrategyError
from ensemble_core.strategies.registry import STRATEGIES

CHOICE_ENSEMBLE = "choice-ensemble"


class StrategySpec(BaseModel):
    """One strategy to evaluate: its label in the report, registered name and parameters."""

    model_config = ConfigDict(extra="forbid")

    label: str
    name: str
    params: dict[str, Any] = Field(default_factory=dict)

    @property
    def slug(self) -> str:
        """The label as a file name (resume cache)."""
        return "".join(c if c.isalnum() or c in "-_." else "_" for c in self.label)


def split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside brackets or braces (YAML values may hold lists and mappings)."""
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for char in text:
        if char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
            if depth < 0:
                raise ConfigError(f"strategy specs {text!r}: a {char!r} without its opening bracket")
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    if depth:
        raise ConfigError(f"strategy specs {text!r}: a '[' is not closed")
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


def parse_spec(text: str) -> StrategySpec:
    """`name`, `single:member`, `name[key=value,...]`; an unknown name lists the known ones."""
    head, bracket, rest = text.partition("[")
    params: dict[str, Any] = {}
    if bracket:
        if not rest.endswith("]"):
            raise ConfigError(
                f"strategy spec {text!r}: parameters go in brackets at the end: name[key=value]"
            )
        for pair in split_top_level(rest[:-1]):
            key, sep, value = pair.partition("=")
            if not sep or not key.strip():
                raise ConfigError(f"strategy spec {text!r}: write each parameter as key=value, not {pair!r}")
            params[key.strip()] = yaml.safe_load(value)
    name, colon, member = head.strip().partition(":")
    if colon:
        if name != "single" or not member:
            raise ConfigError(
                f"strategy spec {text!r}: only single takes a member after ':' (single:smollm2)"
            )
        params["member"] = member
    if name != CHOICE_ENSEMBLE and name not in STRATEGIES:
        raise UnknownStrategyError(name, [*STRATEGIES, CHOICE_ENSEMBLE])
    return StrategySpec(label=text.strip(), name=name, params=params)


def parse_specs(text: str) -> list[StrategySpec]:
    specs = [parse_spec(part) for part in split_top_level(text)]
    if not specs:
        raise ConfigError("--strategies is empty: name at least one, e.g. single:smollm2,single:gemma3")
    labels = [s.label for s in specs]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise ConfigError(f"--strategies names {', '.join(repeated)} more than once")
    return specs
