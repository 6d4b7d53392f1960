"""Run an ensemble's OpenAI-compatible app with uvicorn on a free loopback port, in a thread, for tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import uvicorn

from ensemble_core.ensemble import Ensemble
from ensemble_core.service import ServiceSettings, create_app
from tests.llama_server import free_port


@contextmanager
def serving(
    ensemble: Ensemble, trace: str = "redacted", *, ready: bool = True, **settings: Any
) -> Iterator[str]:
    """Yield the base URL (…/v1) of a real HTTP server for `ensemble` (`settings`: `ServiceSettings`
    fields) once `/ready` answers 200 (with `ready=False`, once the server answers at all); stop it
    afterwards."""
    port = free_port()
    app = create_app(ensemble, ServiceSettings(trace=trace, **settings))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while True:
        try:
            response = httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1)
            if ready:
                response.raise_for_status()
            break
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise RuntimeError("the ensemble server was not ready within 30 s") from None
            time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
