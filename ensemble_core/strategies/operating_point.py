"""`OperatingPoint`: what a tunable strategy does on held-out records at one setting (a cascade's thresholds,
a router's threshold): mean quality and cost per request, and the share of requests each member answered.
A strategy's `curve(records)` lists them; `calibrate(...)` returns a copy set to the chosen one."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class OperatingPoint(BaseModel):
    """One setting of a tunable strategy, measured on records held out from fitting."""

    model_config = ConfigDict(extra="forbid")

    thresholds: list[float] = Field(description="the setting: one threshold per tunable step")
    quality: float = Field(description="mean quality per request")
    cost: float = Field(description="mean cost per request (money, or seconds where nothing costs money)")
    shares: dict[str, float] = Field(description="share of requests each member answered")
    expensive_share: float | None = Field(
        default=None, description="share of requests sent to the most expensive member (routers)"
    )
