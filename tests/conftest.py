"""Shared fixtures: the packaged models load once per test session; tiny random models for unit tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.llama_server import LlamaServer, llama_cpp_server_missing


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", default=False, help="also run tests marked slow")


_SERVERS: list[LlamaServer] = []  # the session's llama.cpp server, once started
_DIED_IN: list[str] = []  # the test during which it was found dead


def _server_death() -> str | None:
    return next((death for server in _SERVERS if (death := server.death())), None)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A test that uses the llama.cpp server fails with the server's death (signal, log tail) when the
    server died during it, instead of with the connection error its client saw."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.when == "teardown" or "llama_server" not in item.fixturenames or _DIED_IN:
        return
    death = _server_death()
    if death:
        _DIED_IN.append(item.nodeid)
        report.outcome = "failed"
        report.longrepr = death


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Once the server has died, every later test that needs it fails at once with one line (no waiting on
    a dead port, no cascade of connection errors)."""
    if "llama_server" in item.fixturenames and _DIED_IN:
        pytest.fail(f"the llama.cpp server died during {_DIED_IN[0]} (its failure shows why)", pytrace=False)


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
    from ensemble_core.members.packaged import smollm2

    member = smollm2()
    member.load()
    return member


@pytest.fixture(scope="session")
def gemma3():
    """The packaged Gemma 3 270M base model, loaded once for the whole session."""
    from ensemble_core.members.packaged import gemma3

    member = gemma3()
    member.load()
    return member


@pytest.fixture(scope="session")
def qwen05():
    """The packaged Qwen2.5-Coder-0.5B-Instruct (a chat template with tools), loaded once for the session."""
    from ensemble_core.members.packaged import qwen05

    member = qwen05()
    member.load()
    return member


@pytest.fixture(scope="session")
def qwen15():
    """The packaged Qwen2.5-Coder-1.5B-Instruct, the strongest member, loaded once for the session."""
    from ensemble_core.members.packaged import qwen15

    member = qwen15()
    member.load()
    return member


@pytest.fixture(scope="session")
def small_pair(smollm2, gemma3):
    return [smollm2, gemma3]


@pytest.fixture(scope="session")
def llama_server() -> Iterator[str]:
    """The base URL ("http://127.0.0.1:PORT/v1") of a llama.cpp server serving the packaged
    SmolLM2-135M-Instruct GGUF with the chatml chat format; any model name is accepted. Skipped when
    llama-cpp-python[server] is not installed; stopped at the end of the session."""
    missing = llama_cpp_server_missing()
    if missing:
        pytest.skip(missing)
    from ensemble_core.members.packaged import smollm2_path

    with LlamaServer(smollm2_path(), chat_format="chatml") as server:
        _SERVERS.append(server)
        yield server.base_url
        death = server.death()
        if death and not _DIED_IN:
            pytest.fail(death, pytrace=False)
