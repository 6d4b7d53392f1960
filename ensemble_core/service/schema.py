"""The OpenAI chat completions request as the service takes it: every field typed and bounded, so a client's
mistake is found here, before any member is called, and answered 400 with the field it concerns."""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any, Literal

from jsonschema import SchemaError, validators
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ensemble_core.types import (
    SEED_MAX,
    SEED_MIN,
    Message,
    Params,
    Request,
    ResponseFormat,
    ToolCall,
    ToolSpec,
)

#: OpenAI's limits: the sampling ranges, top log-probabilities per token, stop strings per request.
MAX_TEMPERATURE, MAX_TOP_LOGPROBS, MAX_STOP = 2.0, 20, 4
_NAME = r"^[A-Za-z0-9_\-.]{1,64}$"


class _Lenient(BaseModel):
    """Fields OpenAI clients send that the ensemble does not use are ignored, as OpenAI-compatible servers
    ignore them; every field it reads is checked strictly (no `false` for a number, no "1" for an integer),
    so what the OpenAPI schema calls invalid is refused."""

    model_config = ConfigDict(extra="ignore", strict=True)


class TextPart(_Lenient):
    type: Literal["text"]
    text: str


def _text_parts_only(content: Any) -> Any:
    """Name a non-text content part (an image, audio, a file) plainly instead of as a failed union."""
    if isinstance(content, list):
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else None
            if isinstance(kind, str) and kind != "text":
                raise ValueError(
                    f"content parts of type {kind!r} are not supported: this ensemble reads text only; "
                    "send the content as a string or as text parts"
                )
    return content


Content = str | list[TextPart]


def _text(content: Content | None) -> str:
    if content is None:
        return ""
    return content if isinstance(content, str) else "".join(part.text for part in content)


class _Turn(_Lenient):
    @field_validator("content", mode="before", check_fields=False)
    @classmethod
    def _content_parts(cls, content: Any) -> Any:
        return _text_parts_only(content)


class SystemMessage(_Turn):
    role: Literal["system", "developer"]
    content: Content
    name: str | None = None


class UserMessage(_Turn):
    role: Literal["user"]
    content: Content
    name: str | None = None


class FunctionCall(_Lenient):
    name: str = Field(pattern=_NAME)
    arguments: str = Field(description="the arguments as a JSON object, encoded as a string")

    @field_validator("arguments")
    @classmethod
    def _json_object(cls, arguments: str) -> str:
        try:
            parsed = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError as err:
            raise ValueError(f"the arguments are not valid JSON ({err})") from None
        if not isinstance(parsed, dict):
            raise ValueError("the arguments must encode a JSON object")
        return arguments


class AssistantToolCall(_Lenient):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class AssistantMessage(_Turn):
    role: Literal["assistant"]
    content: Content | None = None
    tool_calls: list[AssistantToolCall] | None = None
    name: str | None = None


class ToolMessage(_Turn):
    role: Literal["tool"]
    content: Content
    tool_call_id: str = Field(min_length=1)


ChatMessage = Annotated[
    SystemMessage | UserMessage | AssistantMessage | ToolMessage, Field(discriminator="role")
]


class FunctionDefinition(_Lenient):
    name: str = Field(pattern=_NAME)
    description: str | None = None
    parameters: dict[str, Any] | None = Field(default=None, description="a JSON Schema of the arguments")
    strict: bool | None = None

    @field_validator("parameters")
    @classmethod
    def _a_json_schema(cls, schema: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if schema is None else check_json_schema(schema)


class Tool(_Lenient):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(_Lenient):
    name: str = Field(pattern=_NAME)


class NamedToolChoice(_Lenient):
    type: Literal["function"]
    function: NamedFunction


class JsonSchemaFormat(_Lenient):
    name: str = Field(pattern=r"^[A-Za-z0-9_\-]{1,64}$")
    description: str | None = None
    schema_: dict[str, Any] = Field(alias="schema", description="the JSON Schema the answer must match")
    strict: bool | None = None

    @field_validator("schema_")
    @classmethod
    def _a_json_schema(cls, schema: dict[str, Any]) -> dict[str, Any]:
        return check_json_schema(schema)


class TextFormat(_Lenient):
    type: Literal["text"]


class JsonObjectFormat(_Lenient):
    type: Literal["json_object"]


class JsonSchemaResponseFormat(_Lenient):
    type: Literal["json_schema"]
    json_schema: JsonSchemaFormat


ResponseFormatIn = Annotated[
    TextFormat | JsonObjectFormat | JsonSchemaResponseFormat, Field(discriminator="type")
]


class StreamOptions(_Lenient):
    include_usage: bool = False


class ChatCompletionRequest(_Lenient):
    """The fields of OpenAI's chat completions request that the ensemble honours, checked the way vLLM's
    OpenAI server checks them. `model` names the ensemble or one of its members; `n` must be 1; penalties
    and `logit_bias` are refused rather than ignored, since they would change the answer."""

    model: str | None = None
    messages: list[ChatMessage]
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    temperature: float | None = Field(default=None, ge=0.0, le=MAX_TEMPERATURE)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=SEED_MIN, le=SEED_MAX)
    n: int | None = Field(default=None, ge=1, le=128)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    logprobs: bool | None = False
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)
    response_format: ResponseFormatIn | None = None
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    logit_bias: dict[str, float] | None = None
    user: str | None = None

    @field_validator("stop")
    @classmethod
    def _stop_strings(cls, stop: str | list[str] | None) -> str | list[str] | None:
        strings = [stop] if isinstance(stop, str) else stop or []
        if len(strings) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop strings are allowed")
        if any(s == "" for s in strings):
            raise ValueError("stop strings must be non-empty")
        return stop

    @model_validator(mode="after")
    def _consistent(self) -> ChatCompletionRequest:
        if self.n not in (None, 1):
            raise ValueError("n must be 1: an ensemble returns one answer per request")
        if self.presence_penalty or self.frequency_penalty or self.logit_bias:
            raise ValueError(
                "presence_penalty, frequency_penalty and logit_bias are not supported by the ensemble: "
                "leave them out (or at 0)"
            )
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs set to true")
        names = {tool.function.name for tool in self.tools or []}
        if isinstance(self.tool_choice, NamedToolChoice) and self.tool_choice.function.name not in names:
            raise ValueError(
                f"tool_choice names the tool {self.tool_choice.function.name!r}, which is not among the "
                f"tools given ({', '.join(sorted(names)) or 'none'})"
            )
        if self.tool_choice == "required" and not names:
            raise ValueError("tool_choice 'required' needs at least one tool in tools")
        return self

    def to_request(self) -> Request:
        """The engine's `Request` (the `developer` role is a system turn to the members)."""
        params: dict[str, Any] = {
            "max_tokens": self.max_completion_tokens or self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "stop": [self.stop] if isinstance(self.stop, str) else self.stop,
            "seed": self.seed,
        }
        return Request(
            messages=[_message(m) for m in self.messages],
            tools=[_tool_spec(t) for t in self.tools or []],
            tool_choice=_tool_choice(self.tool_choice),
            params=Params(**{k: v for k, v in params.items() if v is not None}),
            response_format=_response_format(self.response_format),
        )


def check_json_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` itself, when it is a valid JSON Schema (of the draft it declares, else 2020-12)."""
    try:
        validators.validator_for(schema).check_schema(schema)
    except SchemaError as err:
        where = "/".join(str(p) for p in err.path) or "the top level"
        raise ValueError(f"not a valid JSON Schema at {where}: {err.message}") from None
    return schema


def _message(message: SystemMessage | UserMessage | AssistantMessage | ToolMessage) -> Message:
    if isinstance(message, SystemMessage):
        return Message(role="system", content=_text(message.content), name=message.name)
    if isinstance(message, UserMessage):
        return Message(role="user", content=_text(message.content), name=message.name)
    if isinstance(message, ToolMessage):
        return Message(role="tool", content=_text(message.content), tool_call_id=message.tool_call_id)
    calls = [
        ToolCall(
            id=call.id or f"call_{uuid.uuid4().hex[:12]}",
            name=call.function.name,
            arguments=json.loads(call.function.arguments) if call.function.arguments.strip() else {},
        )
        for call in message.tool_calls or []
    ]
    return Message(role="assistant", content=_text(message.content), tool_calls=calls, name=message.name)


def _tool_spec(tool: Tool) -> ToolSpec:
    function = tool.function
    return ToolSpec(
        name=function.name,
        description=function.description or "",
        parameters=function.parameters or {"type": "object", "properties": {}},
    )


def _tool_choice(choice: str | NamedToolChoice | None) -> str | None:
    return choice.function.name if isinstance(choice, NamedToolChoice) else choice


def _response_format(
    response_format: TextFormat | JsonObjectFormat | JsonSchemaResponseFormat | None,
) -> ResponseFormat | None:
    if response_format is None:
        return None
    if isinstance(response_format, JsonSchemaResponseFormat):
        spec = response_format.json_schema
        return ResponseFormat(
            type="json_schema", name=spec.name, json_schema=spec.schema_, strict=bool(spec.strict)
        )
    return ResponseFormat(type=response_format.type)
