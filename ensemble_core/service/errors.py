"""Every error the service answers, in OpenAI's shape (`{"error": {"message", "type", "param", "code"}}`),
FastAPI's and Starlette's own included, and which status an engine error becomes: the request's fault is a
4xx, a member's or the transport's a 5xx."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from ensemble_core.errors import (
    AllMembersFailedError,
    ConfigError,
    DeadlineExceededError,
    EnsembleError,
    RequestError,
    ResponseFormatError,
)
from ensemble_core.members.breaker import CircuitOpenError

log = logging.getLogger("ensemble_core.service")

#: How many of a body's validation problems one error message lists.
_PROBLEMS_SHOWN = 3
_STATUS_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "internal_error",
    502: "upstream_error",
    503: "service_unavailable",
    504: "timeout_error",
}


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(BaseModel):
    """OpenAI's error object, as vLLM's OpenAI server answers it."""

    error: ErrorDetail


class APIError(Exception):
    """An answer the service gives instead of a completion: status, OpenAI error fields, extra headers."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        detail = ErrorDetail(
            message=self.message,
            type=_STATUS_TYPES.get(self.status, "error"),
            param=self.param,
            code=self.code,
        )
        return ErrorBody(error=detail).model_dump()

    def response(self) -> JSONResponse:
        return JSONResponse(status_code=self.status, content=self.body(), headers=self.headers)


def invalid(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


def from_validation(errors: Sequence[Any]) -> APIError:
    """A body that FastAPI could not parse or validate -> 400 naming the fields and what is wrong."""
    problems = []
    for error in errors:
        where = ".".join(str(part) for part in _field_path(error.get("loc", ())))
        if error.get("type") == "json_invalid":
            reason = (error.get("ctx") or {}).get("error", "invalid JSON")
            problems.append(("", f"the body is not valid JSON ({reason})"))
        elif not where and error.get("type") == "missing":
            problems.append(("", "the body is empty, not valid JSON: send a chat completion request"))
        else:
            message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
            problems.append((where, f"{where}: {message}" if where else message))
    shown = list(dict.fromkeys(text for _, text in problems))
    more = len(shown) - _PROBLEMS_SHOWN
    message = "; ".join(shown[:_PROBLEMS_SHOWN]) + (f" (and {more} more)" if more > 0 else "")
    first = problems[0][0] if problems else None
    return invalid(message or "the body is not a valid chat completion request", param=first or None)


def _field_path(loc: Sequence[Any]) -> list[Any]:
    """A validation error's location as the client wrote the body: without FastAPI's leading "body", the
    union branches pydantic tried ("str", "list[TextPart]") and the tags of tagged unions (a message's
    role, a response format's type)."""
    path: list[Any] = []
    for i, part in enumerate(loc):
        if isinstance(part, str):
            before = loc[i - 1] if i else None
            tag = before == "response_format" or (isinstance(before, int) and path[-2:-1] == ["messages"])
            if (i == 0 and part == "body") or tag or _union_branch(part):
                continue
        path.append(part)
    return path


def _union_branch(part: str) -> bool:
    return "[" in part or part[:1].isupper() or part in {"str", "int", "float", "bool", "list", "dict"}


def from_engine(err: EnsembleError, retry_after_s: int = 1) -> APIError:
    """An engine error -> its answer: the request's fault (a `RequestError` or `ConfigError`, also as the
    cause of a member's failure) is 400; every circuit open is 503 with `Retry-After: retry_after_s`; a
    timeout of every member is 504; any other fault of a member or the transport is 502."""
    if isinstance(err, DeadlineExceededError):
        return APIError(
            504, f"{err}; the service's --request-timeout sets the deadline", code="deadline_exceeded"
        )
    causes = list(err.errors.values()) if isinstance(err, AllMembersFailedError) else [err]
    if causes and all(_requests_fault(cause) for cause in causes):
        return invalid("; ".join(dict.fromkeys(str(_root(cause)) for cause in causes)))
    if causes and all(_in_chain(cause, CircuitOpenError) for cause in causes):
        return APIError(503, str(err), code="circuit_open", headers={"Retry-After": str(retry_after_s)})
    if causes and all(_timed_out(cause) for cause in causes):
        return APIError(504, str(err), code="member_timeout")
    if isinstance(err, ResponseFormatError):
        return APIError(502, str(err), param="response_format", code="invalid_response_format")
    return APIError(502, str(err), code="upstream_error")


def _chain(err: BaseException | None) -> Iterable[BaseException]:
    while err is not None:
        yield err
        err = err.__cause__


def _in_chain(err: BaseException, kind: type[BaseException]) -> bool:
    return any(isinstance(link, kind) for link in _chain(err))


def _requests_fault(err: BaseException) -> bool:
    return any(isinstance(link, RequestError | ConfigError) for link in _chain(err))


def _root(err: BaseException) -> BaseException:
    """The request error a member's failure was caused by (its message says what to change)."""
    return next((link for link in _chain(err) if isinstance(link, RequestError | ConfigError)), err)


def _timed_out(err: BaseException) -> bool:
    return _in_chain(err, TimeoutError)


def install_handlers(app: FastAPI) -> None:
    """Answer FastAPI's validation errors, Starlette's HTTP errors and anything unexpected in OpenAI's shape
    (FastAPI's own `{"detail": ...}` 422 would be the only error of another shape)."""

    @app.exception_handler(APIError)
    async def api_error(request: Request, err: APIError) -> JSONResponse:
        return err.response()

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, err: RequestValidationError) -> JSONResponse:
        return from_validation(err.errors()).response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        message = "no such route" if err.status_code == 404 else str(err.detail)
        headers = dict(err.headers or {})
        return APIError(err.status_code, message, headers=headers).response()

    @app.exception_handler(RecursionError)
    async def too_deep(request: Request, err: RecursionError) -> JSONResponse:
        return invalid("the body is nested too deeply to read").response()

    @app.exception_handler(Exception)
    async def unexpected(request: Request, err: Exception) -> JSONResponse:
        log.exception("unexpected error answering %s %s", request.method, request.url.path)
        return APIError(
            500, f"internal error ({type(err).__name__}); the service log has the details"
        ).response()
