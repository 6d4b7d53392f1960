"""Shared fixtures: the packaged models load once per test session; tiny random models for unit tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.llama_server import LlamaServer, llama_cpp_server_missing


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", default=False, help="also run tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def smollm2():
    """The packaged SmolLM2-135M-Instruct, loaded once for the whole session."""
    from ensemble_core.defaults import smollm2

    member = smollm2()
    member.load()
    return member


@pytest.fixture(scope="session")
def gemma3():
    """The packaged Gemma 3 270M base model, loaded once for the whole session."""
    from ensemble_core.defaults import gemma3

    member = gemma3()
    member.load()
    return member


@pytest.fixture(scope="session")
def default_pair(smollm2, gemma3):
    return [smollm2, gemma3]


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
