"""An OpenAI-compatible HTTP service in front of an ensemble (`llm-ensemble serve`): any OpenAI client, or
another ensemble's `OpenAICompatMember`, can use the ensemble as one model. Stateless: each request carries
its conversation, so several replicas can sit behind a load balancer while the members run on their own
serving engines (vLLM, SGLang, TGI, llama.cpp)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import FastAPI
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ensemble_core.ensemble import Ensemble, to_tool_spec
from ensemble_core.errors import AllMembersFailedError, EnsembleError
from ensemble_core.types import Delta, Message, Params, Request, Result, ToolCall, Trace

TraceMode = Literal["full", "redacted", "none"]


class ChatCompletionRequest(BaseModel):
    """The fields of OpenAI's chat completions request that an ensemble honours; other fields are ignored
    the way OpenAI-compatible servers ignore what they do not implement, except `n` above 1 (refused)."""

    model_config = ConfigDict(extra="ignore")
    model: str | None = None
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] = Field(default_factory=list)
    tool_choice: str | dict[str, Any] | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int = 1
    stream: bool = False
    stream_options: dict[str, Any] | None = None

    def to_request(self) -> Request:
        if self.n != 1:
            raise ValueError("n must be 1: an ensemble returns one answer per request")
        params: dict[str, Any] = {
            "max_tokens": self.max_completion_tokens or self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "stop": [self.stop] if isinstance(self.stop, str) else self.stop,
            "seed": self.seed,
        }
        return Request(
            messages=[from_openai_message(m) for m in self.messages],
            tools=[to_tool_spec(t) for t in self.tools],
            tool_choice=_tool_choice(self.tool_choice),
            params=Params(**{k: v for k, v in params.items() if v is not None}),
        )


def from_openai_message(message: dict[str, Any]) -> Message:
    """An OpenAI chat message (string or text-part content, tool calls, tool results) -> `Message`."""
    content = message.get("content") or ""
    if isinstance(content, list):
        kinds = {part.get("type") for part in content}
        if kinds - {"text"}:
            raise ValueError(
                f"unsupported content parts {sorted(kinds - {'text'})}: this ensemble reads text only"
            )
        content = "".join(part.get("text", "") for part in content)
    calls = [
        ToolCall(
            id=call.get("id") or f"call_{uuid.uuid4().hex[:12]}",
            name=call["function"]["name"],
            arguments=json.loads(call["function"].get("arguments") or "{}"),
        )
        for call in message.get("tool_calls") or []
    ]
    return Message(
        role=message["role"],
        content=content,
        tool_calls=calls,
        tool_call_id=message.get("tool_call_id"),
        name=message.get("name"),
    )


def _tool_choice(choice: str | dict[str, Any] | None) -> str | None:
    if isinstance(choice, dict):
        return choice.get("function", {}).get("name")
    return choice


def _openai_tool_calls(calls: list[ToolCall]) -> list[dict[str, Any]]:
    return [
        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": json.dumps(c.arguments)}}
        for c in calls
    ]


def _usage(result_usage: Any) -> dict[str, int]:
    return {
        "prompt_tokens": result_usage.input_tokens,
        "completion_tokens": result_usage.output_tokens,
        "total_tokens": result_usage.total_tokens,
    }


def create_app(ensemble: Ensemble, model_name: str = "ensemble", trace: TraceMode = "redacted") -> FastAPI:
    """The FastAPI app: `/v1/chat/completions` (plain and streamed), `/v1/models`, `/health`. `trace` says
    how much of each answer's trace goes back to the caller, under `ensemble_trace`."""
    app = FastAPI(title="llm-ensemble", version="1")

    def shown(t: Trace | None) -> dict[str, Any] | None:
        if t is None or trace == "none":
            return None
        return (t if trace == "full" else t.redacted()).model_dump(mode="json")

    def error(status: int, message: str, kind: str) -> JSONResponse:
        return JSONResponse(status_code=status, content={"error": {"message": message, "type": kind}})

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "members": {m.name: m.breaker.state for m in ensemble.members.values()}}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": model_name, "object": "model", "owned_by": "llm-ensemble"}]}

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(body: ChatCompletionRequest) -> JSONResponse | StreamingResponse:
        try:
            request = body.to_request()
        except (ValidationError, ValueError, KeyError, json.JSONDecodeError) as err:
            return error(400, f"invalid request: {err}", "invalid_request_error")
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        if body.stream:
            include_usage = bool((body.stream_options or {}).get("include_usage"))
            events = _stream_events(ensemble, request, completion_id, model_name, include_usage, shown)
            return StreamingResponse(events, media_type="text/event-stream")
        try:
            result: Result = await ensemble.arun_request(request)
        except AllMembersFailedError as err:
            return error(502, str(err), "upstream_error")
        except EnsembleError as err:
            return error(400, str(err), "invalid_request_error")
        message: dict[str, Any] = {"role": "assistant", "content": result.text or None}
        if result.tool_calls:
            message["tool_calls"] = _openai_tool_calls(result.tool_calls)
        return JSONResponse(
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model_name,
                "choices": [{"index": 0, "message": message, "finish_reason": result.finish_reason}],
                "usage": _usage(result.usage),
                "ensemble_trace": shown(result.trace),
            }
        )

    return app


async def _stream_events(
    ensemble: Ensemble, request: Request, completion_id: str, model_name: str, include_usage: bool, shown: Any
) -> AsyncIterator[str]:
    """Server-sent events in OpenAI's chunk format; a failure mid-stream ends with an error event, never a
    silent cut."""
    created = int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        body = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model_name,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            **extra,
        }
        return f"data: {json.dumps(body)}\n\n"

    yield chunk({"role": "assistant", "content": ""})
    try:
        async for delta in ensemble.astream_request(request):
            if delta.final:
                yield chunk({}, delta.finish_reason or "stop", ensemble_trace=shown(delta.trace))
                if include_usage and delta.usage is not None:
                    usage_chunk = {
                        "id": completion_id,
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": model_name,
                        "choices": [],
                        "usage": _usage(delta.usage),
                    }
                    yield f"data: {json.dumps(usage_chunk)}\n\n"
            elif delta.text or delta.tool_call_chunks:
                yield chunk(_delta_body(delta))
    except EnsembleError as err:
        yield f"data: {json.dumps({'error': {'message': str(err), 'type': type(err).__name__}})}\n\n"
    yield "data: [DONE]\n\n"


def _delta_body(delta: Delta) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if delta.text:
        body["content"] = delta.text
    if delta.tool_call_chunks:
        body["tool_calls"] = [
            {
                "index": c.index,
                **({"id": c.id} if c.id else {}),
                "type": "function",
                "function": {**({"name": c.name} if c.name else {}), "arguments": c.arguments},
            }
            for c in delta.tool_call_chunks
        ]
    return body
