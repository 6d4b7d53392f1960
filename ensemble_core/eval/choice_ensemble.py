"""Sequence-level ensembling of choice scores ("choice-ensemble"): every member scores every choice, and the
length-normalised log-likelihoods are summed with weights (a log-linear, product-of-experts combination).

Weights: "uniform"; "packllm-sim" (per item, from how well each member predicts the prompt: weight ∝
exp(-NLL per byte / tau), the PackLLM-sim rule of Mavromatis et al. 2024 with perplexity measured per
byte so members with different tokenizers compare); or fixed {member: weight}.

It is not a registered `Strategy`: a strategy answers a request with text, while this ranks choices given in
advance, so it lives here, next to the choice scores it combines."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from ensemble_core.errors import ConfigError
from ensemble_core.eval.choice_scoring import ChoiceScores
from ensemble_core.scoring.packllm import sim_weights


class ChoiceEnsemble(BaseModel):
    """The parameters of `choice-ensemble[...]` in a strategy spec."""

    model_config = ConfigDict(extra="forbid")

    weights: Literal["uniform", "packllm-sim"] | dict[str, float] = Field(
        default="uniform",
        description="uniform, packllm-sim (per item, from prompt perplexity), or {member: weight}",
    )
    tau: float = Field(
        default=0.25,
        gt=0,
        validation_alias=AliasChoices("tau", "temperature"),
        description="packllm-sim temperature (or `temperature`), on the prompt's nats per byte (≈ 1 nat per "
        "token at ~4 bytes per token); token fusion's `tau` is the same τ on nats per character",
    )
    members: list[str] | None = Field(default=None, description="members to combine; default: all")

    def member_weights(self, scores: Mapping[str, ChoiceScores]) -> dict[str, float]:
        """Weights summing to 1 over the members present."""
        names = list(scores)
        if self.weights == "uniform":
            return {n: 1 / len(names) for n in names}
        if self.weights == "packllm-sim":
            nll = [scores[n].prompt_nll_per_byte for n in names]
            if any(v is None for v in nll):
                return {n: 1 / len(names) for n in names}
            perplexities = [math.exp(v) for v in nll if v is not None]
            raw = dict(zip(names, sim_weights(perplexities, self.tau), strict=True))
        else:
            unknown = sorted(set(self.weights) - set(names))
            if unknown:
                raise ConfigError(
                    f"choice-ensemble weights name unknown members {unknown}; the members are {names}"
                )
            raw = {n: float(self.weights.get(n, 0.0)) for n in names}
        total = sum(raw.values())
        if total <= 0:
            raise ConfigError("choice-ensemble weights must not all be zero")
        return {n: w / total for n, w in raw.items()}

    def combine(
        self, scores: Mapping[str, ChoiceScores], norm: str
    ) -> tuple[int, dict[str, float], list[float]]:
        """The chosen choice index, the weights used and the combined score of each choice."""
        chosen = {n: s for n, s in scores.items() if self.members is None or n in self.members}
        if not chosen:
            raise ConfigError(f"choice-ensemble: none of {self.members} is a member ({', '.join(scores)})")
        weights = self.member_weights(chosen)
        per_member = {n: s.normalised(norm) for n, s in chosen.items()}
        width = len(next(iter(per_member.values())))
        combined = [sum(weights[n] * per_member[n][c] for n in chosen) for c in range(width)]
        return max(range(width), key=combined.__getitem__), weights, combined
