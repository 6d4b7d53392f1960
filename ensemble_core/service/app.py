"""The FastAPI app of `llm-ensemble serve`: `/v1/chat/completions` (plain and streamed), `/v1/models`,
`/v1/models/{id}`, `/health` and `/ready`, behind the `Guard` (keys, limits) and with every error in OpenAI's
shape. Stateless: each request carries its conversation, so replicas scale out behind a load balancer."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError

from ensemble_core.asyncio_bridge import aclose
from ensemble_core.ensemble import Ensemble
from ensemble_core.errors import ConfigError, EnsembleError, RequestError
from ensemble_core.service.checks import check_answer, check_request
from ensemble_core.service.errors import APIError, ErrorBody, from_engine, from_validation, install_handlers
from ensemble_core.service.guard import GUARDED_PREFIX, APIKeys, Guard
from ensemble_core.service.responses import (
    AnswerMessage,
    ChatCompletion,
    Choice,
    ChoiceLogprobs,
    Health,
    ModelCard,
    ModelList,
    Readiness,
    ToolCallOut,
    UsageOut,
)
from ensemble_core.service.schema import ChatCompletionRequest
from ensemble_core.service.settings import ServiceSettings
from ensemble_core.types import Delta, Request, Result, ToolCallChunk, Trace, merge_tool_call_chunks

log = logging.getLogger("ensemble_core.service")

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in {
        400: "the request is invalid (a body that is not JSON, a field out of range, a prompt too long)",
        401: "no valid API key",
        404: "no such model",
        413: "the body is over the size limit",
        429: "too many requests in flight; see Retry-After",
        502: "the members failed, or answered off the requested response format",
        503: "the ensemble is loading, failed to load, or every member's circuit is open",
        504: "the request ran past its deadline",
    }.items()
}


#: One server-sent event of a streamed completion: a `chat.completion.chunk`, then `[DONE]`; a failure
#: mid-stream sends an OpenAI error object before `[DONE]`.
_SSE_EVENT = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "data": {
            "type": "string",
            "description": "a chat.completion.chunk or an error object as JSON, or [DONE] at the end",
        },
        "event": {"type": "string"},
    },
}


class _Loading:
    """Where loading the members stands: `/ready` reports it, and requests wait for `ready`."""

    def __init__(self) -> None:
        self.status: Readiness = Readiness(status="loading")
        self.error: str | None = None


def create_app(ensemble: Ensemble, settings: ServiceSettings | None = None) -> FastAPI:
    """The app for `ensemble`. On startup it loads the members in the background (`Ensemble.aload`: weights,
    clients, capability probes) while `/ready` answers 503; requests are served once it answers 200."""
    settings = settings or ServiceSettings()
    targets = _targets(ensemble, settings.model_name)
    loading = _Loading()
    created = int(time.time())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(_load(ensemble, loading))
        try:
            yield
        finally:
            task.cancel()

    app = FastAPI(title="llm-ensemble", version="1", lifespan=lifespan)
    install_handlers(app)
    _document_security(app, APIKeys(settings.api_keys).required)

    def shown(trace: Trace | None) -> dict[str, Any] | None:
        if trace is None or settings.trace == "none":
            return None
        return (trace if settings.trace == "full" else trace.redacted()).model_dump(mode="json")

    def retry_after_s(target: Ensemble) -> int:
        waits = [m.breaker.retry_in_s for m in target.members_used()]
        return max(1, math.ceil(min(waits, default=1.0)))

    @app.get("/health", response_model=Health, responses={503: {"model": Health}})
    async def health() -> JSONResponse:
        """Liveness and each member's circuit: `degraded` while some are open, `unavailable` (503) when all
        are; `loading` until the members are loaded. Open to all: it says nothing secret."""
        states = {m.name: m.breaker.state for m in ensemble.members_used()}
        status: Any
        if loading.status.status != "ready":
            status = loading.status.status
        elif all(state == "open" for state in states.values()):
            status = "unavailable"
        elif any(state != "closed" for state in states.values()):
            status = "degraded"
        else:
            status = "ok"
        code = 503 if status in ("unavailable", "failed") else 200
        return JSONResponse(Health(status=status, members=states).model_dump(), status_code=code)

    @app.get("/ready", response_model=Readiness, responses={503: {"model": Readiness}})
    async def ready() -> JSONResponse:
        """Readiness: 200 once the members are loaded, 503 while they load or when loading failed."""
        code = 200 if loading.status.status == "ready" else 503
        return JSONResponse(loading.status.model_dump(), status_code=code)

    @app.get("/v1/models", response_model=ModelList, responses=_ERRORS)
    async def models() -> ModelList:
        """The ensemble and, by name, each member it uses (a member's id asks that member alone)."""
        return ModelList(data=[_card(name, target, settings, created) for name, target in targets.items()])

    @app.get("/v1/models/{model_id:path}", response_model=ModelCard, responses=_ERRORS)
    async def model(model_id: str) -> ModelCard:
        return _card(model_id, _target(targets, model_id, "model_id"), settings, created)

    @app.post(
        "/v1/chat/completions",
        response_model=ChatCompletion,
        responses={
            200: {"content": {"text/event-stream": {"schema": _SSE_EVENT}}},
            **_ERRORS,
        },
    )
    async def chat_completions(body: ChatCompletionRequest) -> Any:
        """OpenAI's chat completions. Everything about the request is checked before any member is called;
        `model` picks the ensemble (its name, or no model) or one member by name."""
        if loading.status.status != "ready":
            raise _not_ready(loading)
        target = _target(targets, body.model or settings.model_name, "model")
        try:
            request = body.to_request()
        except ValidationError as err:
            raise from_validation(err.errors()) from None
        except (RequestError, ConfigError) as err:
            raise APIError(400, str(err)) from None
        await check_request(target, request, bool(body.logprobs))
        request = request.model_copy(update={"timeout_s": settings.request_timeout_s})  # the core enforces it
        model_id = body.model or settings.model_name
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            stream = _Stream(target, request, lambda: retry_after_s(target))
            first = await stream.first()
            events = stream.events(first, _Chunks(completion_id, model_id), include_usage, shown)
            return StreamingResponse(events, media_type="text/event-stream")
        try:
            result: Result = await target.arun_request(request)
            result.require_valid_calls()
            check_answer(request.response_format, result.text, result.tool_calls)
        except EnsembleError as err:
            raise from_engine(err, retry_after_s(target)) from None
        message = AnswerMessage(
            content=result.text or None,
            tool_calls=[ToolCallOut.of(c) for c in result.tool_calls] or None,
        )
        logprobs = ChoiceLogprobs.of(result.logprobs) if body.logprobs and result.logprobs else None
        completion = ChatCompletion(
            id=completion_id,
            created=int(time.time()),
            model=model_id,
            choices=[Choice(message=message, finish_reason=result.finish_reason, logprobs=logprobs)],
            usage=UsageOut.of(result.usage),
            ensemble_trace=shown(result.trace),
        )
        return JSONResponse(completion.model_dump(mode="json"))

    app.add_middleware(
        Guard,
        keys=APIKeys(settings.api_keys),
        max_body_bytes=settings.max_body_bytes,
        max_concurrent=settings.max_concurrent,
        retry_after_s=settings.retry_after_s,
    )
    return app


async def _load(ensemble: Ensemble, loading: _Loading) -> None:
    """Load the members (in worker threads where loading blocks), then mark the service ready; a failure
    is logged with its message and reported by `/ready` by its kind only (messages may name hosts)."""
    try:
        await ensemble.aload()
    except Exception as err:
        log.error("loading the ensemble failed: %s: %s", type(err).__name__, err)
        loading.error = str(err) if isinstance(err, EnsembleError) else type(err).__name__
        loading.status = Readiness(status="failed", error=type(err).__name__)
    else:
        loading.status = Readiness(status="ready")


def _targets(ensemble: Ensemble, model_name: str) -> dict[str, Ensemble]:
    """Who answers each model id: the ensemble under its name, and each member it uses alone (the `single`
    strategy) under the member's name. The members are shared, circuit breakers included."""
    targets = {model_name: ensemble}
    for member in ensemble.members_used():
        if member.name == model_name:
            raise ConfigError(
                f"member {member.name!r} has the service's model name: choose another --model-name"
            )
        targets[member.name] = Ensemble([member], "single", member=member.name)
    return targets


def _target(targets: dict[str, Ensemble], model_id: str, param: str) -> Ensemble:
    if model_id not in targets:
        raise APIError(
            404,
            f"the model {model_id!r} does not exist; the models are: {', '.join(targets)}",
            param=param,
            code="model_not_found",
        )
    return targets[model_id]


def _card(model_id: str, target: Ensemble, settings: ServiceSettings, created: int) -> ModelCard:
    if model_id == settings.model_name:
        return ModelCard(id=model_id, created=created)
    member = next(iter(target.members.values()))
    return ModelCard(id=model_id, created=created, root=member.model_name, parent=settings.model_name)


def _not_ready(loading: _Loading) -> APIError:
    if loading.status.status == "failed":
        return APIError(503, f"the ensemble failed to load: {loading.error}", code="load_failed")
    return APIError(
        503,
        "the ensemble is still loading its members: retry when /ready answers 200",
        code="loading",
        headers={"Retry-After": "5"},
    )


def _document_security(app: FastAPI, keys_required: bool) -> None:
    """Declare the bearer scheme on the `/v1` operations in the OpenAPI schema, when keys are required (the
    `Guard` enforces it, before FastAPI sees the request)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
            for path, operations in schema.get("paths", {}).items():
                for operation in operations.values():
                    operation.get("responses", {}).pop("422", None)
                    if keys_required and path.startswith(GUARDED_PREFIX):
                        operation["security"] = [{"bearer": []}]
            if keys_required:
                schema.setdefault("components", {})["securitySchemes"] = {
                    "bearer": {"type": "http", "scheme": "bearer"}
                }
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


class _Chunks:
    """OpenAI's chunk format for one streamed completion."""

    def __init__(self, completion_id: str, model_id: str):
        self.completion_id = completion_id
        self.model_id = model_id
        self.created = int(time.time())

    def event(self, choices: list[dict[str, Any]], **extra: Any) -> str:
        body = {
            "id": self.completion_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model_id,
            "choices": choices,
            **extra,
        }
        return f"data: {json.dumps(body)}\n\n"

    def delta(self, delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        return self.event([{"index": 0, "delta": delta, "finish_reason": finish}], **extra)


class _Stream:
    """A streamed answer (the core holds it to the request's deadline). Its first delta is awaited before
    the response starts, so a request that fails at once (every member refused it, every circuit open, the
    deadline) gets its status code, not a 200 with an error inside; a failure later ends the stream with an
    error event."""

    def __init__(self, target: Ensemble, request: Request, retry_after_s: Callable[[], int]):
        self.deltas = target.astream_request(request)
        self.request = request
        self.retry_after_s = retry_after_s

    async def next(self) -> Delta | None:
        try:
            return await anext(self.deltas)
        except StopAsyncIteration:
            return None

    async def first(self) -> Delta | None:
        try:
            return await self.next()
        except EnsembleError as err:
            await aclose(self.deltas)
            raise from_engine(err, self.retry_after_s()) from None

    async def events(
        self,
        first: Delta | None,
        chunks: _Chunks,
        include_usage: bool,
        shown: Callable[[Trace | None], dict[str, Any] | None],
    ) -> AsyncIterator[str]:
        text: list[str] = []
        tool_chunks: list[ToolCallChunk] = []
        try:
            yield chunks.delta({"role": "assistant", "content": ""})
            delta = first
            while delta is not None:
                if delta.final:
                    check_answer(
                        self.request.response_format, "".join(text), merge_tool_call_chunks(tool_chunks)
                    )
                    yield chunks.delta({}, delta.finish_reason or "stop", ensemble_trace=shown(delta.trace))
                    if include_usage and delta.usage is not None:
                        yield chunks.event([], usage=UsageOut.of(delta.usage).model_dump())
                elif delta.text or delta.tool_call_chunks:
                    text.append(delta.text)
                    tool_chunks.extend(delta.tool_call_chunks)
                    yield chunks.delta(_delta_body(delta))
                delta = await self.next()
        except EnsembleError as err:
            yield _error_event(from_engine(err, self.retry_after_s()))
        finally:
            await aclose(self.deltas)
        yield "data: [DONE]\n\n"


def _error_event(err: APIError) -> str:
    return f"data: {json.dumps(err.body())}\n\n"


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
