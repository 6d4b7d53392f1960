"""The sync entry points run on one long-lived background loop: async clients inside members keep their
connection pools across sync calls (LangChain's ChatOpenAI, on a real loopback server), context variables
reach the coroutine, an early-closed stream is cleaned up, and a nested sync call does not deadlock."""

from __future__ import annotations

import asyncio
import contextvars

import pytest

from ensemble_core import Ensemble
from ensemble_core.asyncio_bridge import iterate_sync, run_sync
from ensemble_core.members.scripted import ScriptedMember
from tests.serving import serving

_VAR: contextvars.ContextVar[str] = contextvars.ContextVar("_VAR", default="unset")


async def _loop_and_var() -> tuple[asyncio.AbstractEventLoop, str]:
    await asyncio.sleep(0)
    return asyncio.get_running_loop(), _VAR.get()


def test_every_sync_call_runs_on_the_same_loop_with_the_callers_context():
    _VAR.set("caller")
    (first, seen), (second, _) = run_sync(_loop_and_var()), run_sync(_loop_and_var())
    assert first is second and not first.is_closed() and seen == "caller"


def test_run_sync_inside_a_running_loop_and_from_the_bridge_loop_itself():
    async def nested() -> str:
        return run_sync(_loop_and_var())[1]  # sync code called on the bridge loop: no deadlock

    _VAR.set("outer")
    assert run_sync(nested()) == "outer"
    assert asyncio.run(nested()) == "outer"


def test_errors_reach_the_caller_and_a_stream_closed_early_is_cleaned_up():
    async def boom() -> None:
        raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        run_sync(boom())
    cleaned: list[bool] = []

    async def numbers():
        try:
            for i in range(1000):
                await asyncio.sleep(0.001)
                yield i
        finally:
            cleaned.append(True)

    stream = iterate_sync(numbers())
    assert [next(stream), next(stream)] == [0, 1]
    stream.close()
    assert cleaned == [True]
    assert list(iterate_sync(numbers()))[-1] == 999


def test_a_langchain_chatopenai_member_answers_every_sync_call():
    """ChatOpenAI keeps one async httpx pool; on a fresh loop per call every second call failed with
    "Event loop is closed", and `vote` dropped the member silently."""
    from langchain_openai import ChatOpenAI

    from langchain_ensemble.member import LangChainMember

    with serving(Ensemble([ScriptedMember("remote", ["Paris"])])) as url:
        chat = ChatOpenAI(base_url=url, api_key="x", model="ensemble", max_retries=0, timeout=30)
        member = LangChainMember(chat, name="chatopenai")
        ensemble = Ensemble([member, ScriptedMember("local", ["Paris"])], "vote")
        for _ in range(4):
            result = ensemble.run("Capital of France?")
            assert result.text == "Paris" and all(call.ok for call in result.trace.calls), result.trace
        assert "".join(d.text for d in ensemble.stream("Capital of France?")) == "Paris"
        assert Ensemble([member], "single", member="chatopenai").run("q").text == "Paris"


def test_a_keyboard_interrupt_inside_reaches_the_caller_and_the_loop_lives_on():
    async def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sync(interrupted())
    assert run_sync(_loop_and_var())[0].is_running()
