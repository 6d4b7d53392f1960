"""The service's gate, as plain ASGI middleware so it acts before a body is read: API keys (401), the
number of requests in flight (429 with Retry-After), and the body's size (413)."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

from pydantic import SecretStr

from ensemble_core.service.errors import APIError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Paths under which every request needs a key; `/health`, `/ready` and the OpenAPI schema stay open.
GUARDED_PREFIX = "/v1/"
#: Paths whose requests count toward the concurrency limit (the ones that call members).
LIMITED_PATHS = frozenset({"/v1/chat/completions"})


class APIKeys:
    """The keys a client may present as `Authorization: Bearer KEY`; none means the service is open. Keys
    are compared in constant time, and kept as `SecretStr` so no repr or log shows them."""

    def __init__(self, keys: Sequence[SecretStr]):
        self._keys = [key.get_secret_value().encode() for key in keys if key.get_secret_value()]

    @property
    def required(self) -> bool:
        return bool(self._keys)

    def allows(self, authorization: bytes | None) -> bool:
        if not self._keys:
            return True
        scheme, _, token = (authorization or b"").partition(b" ")
        if scheme.lower() != b"bearer":
            return False
        token = token.strip()
        # Every key is compared, matching or not, so timing tells nothing about which one nearly matched.
        return sum(hmac.compare_digest(token, key) for key in self._keys) > 0

    def __repr__(self) -> str:
        return f"APIKeys({len(self._keys)} keys)"


class Guard:
    """Pure ASGI middleware in front of the app: key check, then the in-flight limit, then the body size.

    The body is read here, up to `max_body_bytes` (a declared Content-Length over it is refused before
    reading), and handed on whole; a request stays counted in flight until its response, a stream
    included, has ended."""

    def __init__(
        self, app: ASGIApp, *, keys: APIKeys, max_body_bytes: int, max_concurrent: int, retry_after_s: int
    ):
        self.app = app
        self.keys = keys
        self.max_body_bytes = max_body_bytes
        self.max_concurrent = max_concurrent
        self.retry_after_s = retry_after_s
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        headers = dict(scope.get("headers") or [])
        if path.startswith(GUARDED_PREFIX) and not self.keys.allows(headers.get(b"authorization")):
            unauthorized = APIError(
                401,
                "a valid API key is required: send it as 'Authorization: Bearer KEY'",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )
            await _answer(unauthorized, scope, send)
            return
        limited = path in LIMITED_PATHS
        if limited and self.in_flight >= self.max_concurrent:
            busy = APIError(
                429,
                f"the service is answering {self.in_flight} requests, its limit: retry after "
                f"{self.retry_after_s} s, or add replicas",
                code="too_many_requests",
                headers={"Retry-After": str(self.retry_after_s)},
            )
            await _answer(busy, scope, send)
            return
        if limited:
            self.in_flight += 1
        try:
            body = await self._read_body(headers, receive)
            if isinstance(body, APIError):
                await _answer(body, scope, send)
                return
            await self.app(scope, _replay(body, receive), send)
        finally:
            if limited:
                self.in_flight -= 1

    async def _read_body(self, headers: dict[bytes, bytes], receive: Receive) -> bytes | APIError:
        too_large = APIError(
            413,
            f"the request body is over the service's limit of {self.max_body_bytes} bytes: shorten the "
            "conversation",
            code="request_too_large",
        )
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            return too_large
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return too_large
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that gives the app the body already read, then passes on what comes later (disconnect)."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


async def _answer(err: APIError, scope: Scope, send: Send) -> None:
    response = err.response()
    await response(scope, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}
