"""What the service answers, as pydantic models: they build each answer, and its OpenAPI schema (which the
fuzz tests hold every response to) comes from the same declaration."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, Field

from ensemble_core.types import FinishReason, TokenLogprob, ToolCall, Usage


class FunctionOut(BaseModel):
    name: str
    arguments: str


class ToolCallOut(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionOut

    @classmethod
    def of(cls, call: ToolCall) -> ToolCallOut:
        return cls(id=call.id, function=FunctionOut(name=call.name, arguments=json.dumps(call.arguments)))


class AnswerMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    tool_calls: list[ToolCallOut] | None = None


class TokenLogprobOut(BaseModel):
    token: str
    logprob: float
    bytes: list[int]
    top_logprobs: list[dict[str, Any]] = Field(default_factory=list)


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprobOut]

    @classmethod
    def of(cls, logprobs: list[TokenLogprob]) -> ChoiceLogprobs:
        return cls(
            content=[
                TokenLogprobOut(token=t.token, logprob=t.logprob, bytes=list(t.token.encode("utf-8")))
                for t in logprobs
            ]
        )


class Choice(BaseModel):
    index: int = 0
    message: AnswerMessage
    finish_reason: FinishReason
    logprobs: ChoiceLogprobs | None = None


class UsageOut(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    @classmethod
    def of(cls, usage: Usage) -> UsageOut:
        return cls(
            prompt_tokens=usage.input_tokens,
            completion_tokens=usage.output_tokens,
            total_tokens=usage.total_tokens,
        )


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: UsageOut
    ensemble_trace: dict[str, Any] | None = Field(
        default=None, description="who was asked and what was chosen (redacted unless --trace full)"
    )


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "llm-ensemble"
    root: str | None = Field(default=None, description="the member's underlying model, for a member")
    parent: str | None = Field(default=None, description="the ensemble a member belongs to")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class Health(BaseModel):
    status: Literal["ok", "degraded", "unavailable", "loading", "failed"]
    members: dict[str, Literal["closed", "open", "half-open"]] = Field(
        description="each member's circuit breaker"
    )


class Readiness(BaseModel):
    status: Literal["loading", "ready", "failed"]
    error: str | None = Field(default=None, description="the kind of error that stopped loading")
