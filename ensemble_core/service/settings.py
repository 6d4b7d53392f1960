"""How `llm-ensemble serve` guards itself and answers: the model id clients see, how much trace goes back,
who may call it, and its limits (body size, requests in flight, time per request)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

TraceMode = Literal["full", "redacted", "none"]
#: The environment variable that holds the service's API keys (several: separated by commas or spaces).
API_KEY_ENV = "LLM_ENSEMBLE_API_KEY"


class ServiceSettings(BaseModel):
    """The service's settings; the defaults suit one replica behind a load balancer."""

    model_config = ConfigDict(extra="forbid")

    model_name: str = Field(
        default="ensemble", min_length=1, description="the model id of the whole ensemble"
    )
    trace: TraceMode = Field(default="redacted", description="trace returned with each answer")
    api_keys: list[SecretStr] = Field(
        default_factory=list, description="keys accepted as 'Authorization: Bearer KEY'; none: no auth"
    )
    max_body_bytes: int = Field(default=8 * 2**20, ge=1024, description="largest request body (413 above)")
    max_concurrent: int = Field(default=128, ge=1, description="requests in flight per process (429 above)")
    request_timeout_s: float = Field(default=300.0, gt=0, description="deadline of one request (504 after)")
    retry_after_s: int = Field(default=1, ge=1, description="the Retry-After of a 429")


def api_keys_from(text: str | None) -> list[SecretStr]:
    """The keys in an environment value: separated by commas or whitespace, empty ones dropped."""
    return [SecretStr(key) for key in re.split(r"[,\s]+", text or "") if key]
