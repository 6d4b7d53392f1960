"""Streaming through EnsembleChatModel: real tokens as the strategy decides them, usage on one chunk,
callbacks per token, and astream_events that deliver tokens while the ensemble is still generating."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

from langchain_core.callbacks import AsyncCallbackHandler, BaseCallbackHandler

from ensemble_core.members.base import Member
from ensemble_core.members.scripted import ScriptedMember
from ensemble_core.types import Delta, Generation, Request, Usage
from langchain_ensemble import EnsembleChatModel


class TokenRecorder(BaseCallbackHandler):
    def __init__(self) -> None:
        self.tokens: list[str] = []

    def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
        self.tokens.append(token)


class GatedMember(Member):
    """Streams "first", then waits until the test has seen it downstream before streaming "second"."""

    def __init__(self, name: str, gate: threading.Event):
        super().__init__(name)
        self.gate = gate

    def generate(self, request: Request) -> Generation:
        raise NotImplementedError("streaming only")

    async def astream(self, request: Request) -> AsyncIterator[Delta]:
        yield Delta(text="first", member=self.name)
        if not await asyncio.to_thread(self.gate.wait, 5):
            raise TimeoutError("the first token never reached the consumer: tokens are being held back")
        yield Delta(text=" second", member=self.name)
        yield Delta(
            member=self.name, final=True, finish_reason="stop", usage=Usage(input_tokens=2, output_tokens=2)
        )


def scripted_chat() -> EnsembleChatModel:
    return EnsembleChatModel(
        members=[ScriptedMember("down", [RuntimeError("x")]), ScriptedMember("up", ["a b c d"])]
    )


def test_stream_yields_the_tokens_then_one_last_chunk_with_usage_and_trace():
    chunks = list(scripted_chat().stream("four words please"))
    assert [c.content for c in chunks] == ["a", " b", " c", " d", ""]
    assert all(c.usage_metadata is None for c in chunks[:-1])
    last = chunks[-1]
    assert last.chunk_position == "last"
    assert last.usage_metadata == {"input_tokens": 3, "output_tokens": 4, "total_tokens": 7}
    full = sum(chunks[1:], chunks[0])
    assert full.content == "a b c d"
    assert full.response_metadata["model_name"] == "fallback[down,up]"
    assert full.response_metadata["ensemble_trace"]["chosen"] == "up"


async def test_astream_matches_stream():
    chunks = [c async for c in scripted_chat().astream("four words please")]
    assert "".join(c.content for c in chunks) == "a b c d"
    assert sum(1 for c in chunks if c.usage_metadata) == 1


def test_callbacks_fire_once_per_token_when_streaming_and_when_invoked_with_streaming():
    recorder = TokenRecorder()
    list(scripted_chat().stream("hi", config={"callbacks": [recorder]}))
    assert recorder.tokens == ["a", " b", " c", " d", ""]
    recorder = TokenRecorder()
    chat = EnsembleChatModel(members=[ScriptedMember("up", ["a b"])], streaming=True)
    assert chat.invoke("hi", config={"callbacks": [recorder]}).content == "a b"
    assert recorder.tokens == ["a", " b", ""]


async def test_async_callbacks_fire_per_token():
    class AsyncRecorder(AsyncCallbackHandler):
        def __init__(self) -> None:
            self.tokens: list[str] = []

        async def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
            self.tokens.append(token)

    recorder = AsyncRecorder()
    async for _ in scripted_chat().astream("hi", config={"callbacks": [recorder]}):
        pass
    assert recorder.tokens == ["a", " b", " c", " d", ""]


async def test_astream_events_deliver_each_token_while_the_ensemble_is_still_generating():
    gate = threading.Event()
    chat = EnsembleChatModel(members=[GatedMember("gated", gate)])
    tokens: list[str] = []
    async for event in chat.astream_events("hi", version="v2"):
        if event["event"] == "on_chat_model_stream" and event["data"]["chunk"].content:
            tokens.append(event["data"]["chunk"].content)
            gate.set()  # the member only goes on once the first token has arrived here
    assert tokens == ["first", " second"]


def test_sync_stream_also_delivers_tokens_before_the_end():
    gate = threading.Event()
    stream = EnsembleChatModel(members=[GatedMember("gated", gate)]).stream("hi")
    assert next(stream).content == "first"
    gate.set()
    assert [c.content for c in stream] == [" second", ""]
