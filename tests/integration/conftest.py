"""Integration fixtures: a real llama.cpp OpenAI-compatible server, started once per test session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.llama_server import LlamaServer, llama_cpp_server_missing


@pytest.fixture(scope="session")
def llama_server() -> Iterator[str]:
    """The base URL ("http://127.0.0.1:PORT/v1") of a llama.cpp server serving the packaged
    SmolLM2-135M-Instruct GGUF with the chatml chat format; any model name is accepted. Skipped when
    llama-cpp-python[server] is not installed; stopped at the end of the session."""
    missing = llama_cpp_server_missing()
    if missing:
        pytest.skip(missing)
    from ensemble_core.defaults import smollm2_path

    with LlamaServer(smollm2_path(), chat_format="chatml") as server:
        yield server.base_url
