"""The data that crosses every boundary of the engine: messages, tools, params, generations, deltas, traces.

All are pydantic models so adapters, configs and traces validate and serialise them the same way.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ensemble_core.errors import EmptyMessagesError, InvalidToolCallError

Role = Literal["system", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "tool_calls", "error"]
#: The seeds a request may carry: signed 64-bit integers, the range torch generators and vLLM take.
SEED_MIN, SEED_MAX = -(2**63), 2**63 - 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ToolCall(_Strict):
    """A request from a model to call one tool with JSON arguments."""

    id: str = Field(default_factory=lambda: f"call_{uuid.uuid4().hex[:12]}")
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class ToolCallChunk(_Strict):
    """A streamed fragment of a tool call; fragments with the same index concatenate."""

    index: int = 0
    id: str | None = None
    name: str | None = None
    arguments: str = ""


class InvalidToolCall(_Strict):
    """A tool call a model began but did not finish validly (cut at max_tokens, arguments that are not a JSON
    object): what it wrote and why it is not a call, so it is reported rather than passed on as prose."""

    name: str | None = None
    arguments: str = ""
    error: str


class Message(_Strict):
    """One chat turn. Assistant turns may carry tool calls; tool turns answer one by `tool_call_id`."""

    role: Role
    content: str = ""
    tool_calls: list[ToolCall] = Field(default_factory=list)
    tool_call_id: str | None = None
    name: str | None = None

    @model_validator(mode="after")
    def _check_role_fields(self) -> Message:
        if self.tool_calls and self.role != "assistant":
            raise ValueError(f"only assistant messages carry tool_calls, not a {self.role!r} message")
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs the tool_call_id of the call it answers")
        return self


class ToolSpec(_Strict):
    """A tool the model may call, described by a JSON schema of its parameters (OpenAI function format)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_\-.]{1,64}$")
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})

    def as_openai(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }


class Params(_Strict):
    """Generation parameters shared by every member and strategy."""

    max_tokens: int = Field(default=256, ge=1, le=1_000_000)
    temperature: float = Field(default=0.0, ge=0.0, le=10.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    stop: list[str] = Field(default_factory=list)
    seed: int | None = Field(
        default=None,
        ge=SEED_MIN,
        le=SEED_MAX,
        description="a signed 64-bit integer (what torch and the serving engines take)",
    )

    @field_validator("stop")
    @classmethod
    def _no_empty_stop(cls, stop: list[str]) -> list[str]:
        if any(s == "" for s in stop):
            raise ValueError("stop strings must be non-empty")
        return stop

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


class Usage(_Strict):
    """Token counts; `+` sums them, so a result's usage is the sum over every member call."""

    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
        )


class TokenLogprob(_Strict):
    token: str
    logprob: float


class Generation(_Strict):
    """What one member produced for one request."""

    member: str
    text: str = ""
    tool_calls: list[ToolCall] = Field(default_factory=list)
    invalid_tool_calls: list[InvalidToolCall] = Field(default_factory=list)
    logprobs: list[TokenLogprob] | None = None
    usage: Usage = Field(default_factory=Usage)
    latency_s: float = 0.0
    cpu_s: float | None = Field(
        default=None, description="CPU seconds the member spent, where it measures them"
    )
    finish_reason: FinishReason = "stop"
    prompt_format: str | None = None

    def require_valid_calls(self) -> None:
        """Raise `InvalidToolCallError` when the answer is nothing but invalid tool calls."""
        require_valid_calls(self.tool_calls, self.invalid_tool_calls)

    @property
    def mean_logprob(self) -> float | None:
        if not self.logprobs:
            return None
        return sum(t.logprob for t in self.logprobs) / len(self.logprobs)


class ContinuationScore(_Strict):
    """Log-probability of a continuation given a prompt, as one member sees it."""

    sum_logprob: float
    n_tokens: int
    n_chars: int
    prompt_tokens: int = Field(default=0, description="tokens of the prompt read to score the continuation")
    cpu_s: float | None = Field(default=None, description="CPU seconds spent, where the member measures them")

    @property
    def mean_logprob(self) -> float:
        return self.sum_logprob / max(self.n_tokens, 1)

    def perplexity(self, per: Literal["char", "token"] = "char") -> float:
        """exp(-log-probability per character (comparable across tokenizers) or per token); lower is less
        surprised."""
        units = self.n_chars if per == "char" else self.n_tokens
        return math.exp(-self.sum_logprob / max(units, 1))


class MemberCall(_Strict):
    """One call of one member inside a strategy: who, in what role, what it said, what it cost."""

    member: str
    role: str
    ok: bool = True
    text: str = ""
    tool_calls: list[ToolCall] = Field(default_factory=list)
    error: str | None = None
    usage: Usage = Field(default_factory=Usage)
    latency_s: float = 0.0
    cpu_s: float | None = Field(
        default=None, description="CPU seconds the member spent, where it measures them"
    )
    cost: float = 0.0
    prompt_format: str | None = None
    finish_reason: FinishReason | None = None
    score: float | None = None


class Trace(_Strict):
    """Who was asked, what each said, the scores and weights, what was chosen and why."""

    strategy: str
    calls: list[MemberCall] = Field(default_factory=list)
    chosen: str | None = None
    reason: str = ""
    details: dict[str, Any] = Field(default_factory=dict)

    @property
    def usage(self) -> Usage:
        total = Usage()
        for call in self.calls:
            total = total + call.usage
        return total

    @property
    def cost(self) -> float:
        return sum(call.cost for call in self.calls)

    def redacted(self) -> Trace:
        """A copy without content (answers, tool arguments, error details) for logs and services that must not
        hold user data: who was asked, in what role, tokens, latency, cost, scores and the choice remain."""
        calls = [
            call.model_copy(
                update={
                    "text": f"[{len(call.text)} characters]" if call.text else "",
                    "tool_calls": [c.model_copy(update={"arguments": {}}) for c in call.tool_calls],
                    "error": call.error.split(":", 1)[0] if call.error else None,
                }
            )
            for call in self.calls
        ]
        return self.model_copy(update={"calls": calls, "details": {}})


class ResponseFormat(_Strict):
    """The form the answer must take (OpenAI's `response_format`): free text, any JSON object, or JSON that
    matches `json_schema`. Members whose servers take it receive it; the service checks the final answer."""

    type: Literal["text", "json_object", "json_schema"] = "text"
    name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_\-]{1,64}$")
    json_schema: dict[str, Any] | None = None
    strict: bool = False

    @model_validator(mode="after")
    def _schema_with_its_type(self) -> ResponseFormat:
        if (self.type == "json_schema") != (self.json_schema is not None):
            raise ValueError("a json_schema response format needs a schema, and only that type takes one")
        return self


class Request(_Strict):
    """Messages, tools and params: everything a strategy needs to answer."""

    messages: list[Message]
    tools: list[ToolSpec] = Field(default_factory=list)
    tool_choice: str | None = None
    params: Params = Field(default_factory=Params)
    timeout_s: float | None = Field(
        default=None,
        gt=0,
        description="seconds the whole call may take, every member and the strategy's own work included; "
        "past it the call fails with DeadlineExceededError",
    )
    response_format: ResponseFormat | None = None
    prefill: str = Field(
        default="",
        description="text the assistant's answer already begins with; the member continues it and returns "
        "only the new text (span and step fusion use it to continue a partly written answer)",
    )

    @field_validator("messages")
    @classmethod
    def _not_empty(cls, messages: list[Message]) -> list[Message]:
        if not messages:
            raise EmptyMessagesError(
                "the request has no messages: pass a question string or at least one message"
            )
        return messages

    def with_params(self, **changes: Any) -> Request:
        return self.model_copy(update={"params": self.params.model_copy(update=changes)})

    def with_prefill(self, prefill: str) -> Request:
        return self.model_copy(update={"prefill": prefill})

    @property
    def prefilled_messages(self) -> list[Message]:
        """The messages with the prefill as a last, unfinished assistant turn: how a backend that only takes
        messages (a chat API) is asked to continue a partly written answer."""
        if not self.prefill:
            return list(self.messages)
        return [*self.messages, Message(role="assistant", content=self.prefill)]


class Result(_Strict):
    """The ensemble's answer: text and/or tool calls, usage summed over all member calls, and the trace."""

    text: str = ""
    tool_calls: list[ToolCall] = Field(default_factory=list)
    invalid_tool_calls: list[InvalidToolCall] = Field(
        default_factory=list, description="tool calls the chosen member began but did not finish validly"
    )
    logprobs: list[TokenLogprob] | None = Field(
        default=None,
        description="the chosen answer's per-token log-probabilities, where its member gave them",
    )
    usage: Usage = Field(default_factory=Usage)
    finish_reason: FinishReason = "stop"
    trace: Trace

    def require_valid_calls(self) -> None:
        """Raise `InvalidToolCallError` when the answer is nothing but invalid tool calls (for callers that
        cannot report them as LangChain's `invalid_tool_calls` do)."""
        require_valid_calls(self.tool_calls, self.invalid_tool_calls)


def require_valid_calls(calls: Sequence[ToolCall], invalid: Sequence[InvalidToolCall]) -> None:
    if invalid and not calls:
        raise InvalidToolCallError([f"{c.name or 'a tool'}: {c.error}" for c in invalid])


class Delta(_Strict):
    """A streamed piece of a result. The last delta of a stream has `final=True`, usage and trace."""

    text: str = ""
    tool_call_chunks: list[ToolCallChunk] = Field(default_factory=list)
    member: str | None = None
    final: bool = False
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    trace: Trace | None = None


MessagesLike = str | Sequence[Message | dict[str, Any]]


def to_messages(prompt: MessagesLike) -> list[Message]:
    """A question string or a list of messages (or dicts) -> validated messages; empty input is an error."""
    if isinstance(prompt, str):
        if not prompt.strip():
            raise EmptyMessagesError("the prompt is an empty string: pass a question or a list of messages")
        return [Message(role="user", content=prompt)]
    messages = [m if isinstance(m, Message) else Message.model_validate(m) for m in prompt]
    if not messages:
        raise EmptyMessagesError("the message list is empty: pass a question string or at least one message")
    return messages


def tool_calls_to_chunks(calls: Sequence[ToolCall]) -> list[ToolCallChunk]:
    """Whole tool calls as stream fragments (one fragment per call)."""
    return [
        ToolCallChunk(
            index=i, id=call.id, name=call.name, arguments=json.dumps(call.arguments, ensure_ascii=False)
        )
        for i, call in enumerate(calls)
    ]


def merge_tool_call_chunks(chunks: Sequence[ToolCallChunk]) -> list[ToolCall]:
    """Join streamed tool-call fragments by index into whole calls with parsed JSON arguments."""
    merged: dict[int, dict[str, str]] = {}
    for chunk in chunks:
        entry = merged.setdefault(chunk.index, {"id": "", "name": "", "arguments": ""})
        entry["id"] = entry["id"] or (chunk.id or "")
        entry["name"] = entry["name"] or (chunk.name or "")
        entry["arguments"] += chunk.arguments
    calls = []
    for entry in (merged[i] for i in sorted(merged)):
        arguments = json.loads(entry["arguments"]) if entry["arguments"].strip() else {}
        call = ToolCall(name=entry["name"], arguments=arguments)
        calls.append(call.model_copy(update={"id": entry["id"]}) if entry["id"] else call)
    return calls
