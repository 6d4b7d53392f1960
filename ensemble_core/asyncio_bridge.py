"""Bridges between sync and async code: run a coroutine from sync code, iterate an async generator from sync
code, and iterate a blocking iterator from async code without blocking the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import os
import queue
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import Future, InvalidStateError, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

# Blocking member work (a local model's forward pass, a sync SDK call) runs here rather than in asyncio's
# default pool, which has only cpu_count + 4 workers: an ensemble of many members under many concurrent
# requests would otherwise queue behind it.
_EXECUTOR = ThreadPoolExecutor(max_workers=64, thread_name_prefix="llm-ensemble")


async def to_thread(func: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """`asyncio.to_thread` on the engine's own thread pool (context variables carried along)."""
    call = functools.partial(contextvars.copy_context().run, func, *args, **kwargs)
    return await asyncio.get_running_loop().run_in_executor(_EXECUTOR, call)


_DONE = object()


class _BridgeLoop:
    """The one long-lived event loop, in a daemon thread, that every sync entry point runs its coroutines on.

    A fresh loop per call would strand whatever async clients inside members keep per loop (an httpx
    connection pool belongs to the loop that opened it: the next call on a new loop fails with "Event loop
    is closed"). The loop starts on first use, and again in a child process after a fork."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pid = 0

    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            thread = self._thread
            if self._loop is None or thread is None or not thread.is_alive() or self._pid != os.getpid():
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="llm-ensemble-loop", daemon=True)
                thread.start()
                self._loop, self._thread, self._pid = loop, thread, os.getpid()
            return self._loop

    def on_it(self) -> bool:
        """Whether the calling code runs on the bridge loop's own thread (where blocking on it deadlocks)."""
        return self._thread is threading.current_thread()

    def submit(self, awaitable: Awaitable[T]) -> Future[T]:
        """Run `awaitable` on the loop as a task in a copy of the caller's context variables (LangChain's
        callbacks and config live there); cancelling the returned future cancels the task. Whatever it
        raises, KeyboardInterrupt and SystemExit included, reaches the caller through the future instead
        of stopping the loop."""
        loop = self.loop()
        done: Future[T] = Future()

        async def settle() -> None:
            try:
                value = await awaitable
            except asyncio.CancelledError:
                done.cancel()
                raise
            except BaseException as err:  # re-raised by the caller's `result()`
                _settle(done, functools.partial(done.set_exception, err))
            else:
                _settle(done, functools.partial(done.set_result, value))

        def start() -> None:
            task = loop.create_task(settle())
            done.add_done_callback(
                lambda f: loop.call_soon_threadsafe(task.cancel) if f.cancelled() else None
            )

        loop.call_soon_threadsafe(start, context=contextvars.copy_context())
        return done


_BRIDGE = _BridgeLoop()


def _settle(done: Future[Any], outcome: Callable[[], None]) -> None:
    """Pass an outcome to the caller's future, unless the caller cancelled it meanwhile."""
    with contextlib.suppress(InvalidStateError):
        outcome()


def run_sync(awaitable: Awaitable[T]) -> T:
    """Run a coroutine to completion from sync code, on the long-lived bridge loop (see `_BridgeLoop`), also
    when the calling thread runs a loop of its own. An interrupted caller (Ctrl-C) cancels the coroutine.
    Called from a coroutine on the bridge loop itself, it runs on a loop of its own in a helper thread
    rather than deadlock."""
    if _BRIDGE.on_it():
        return _run_on_own_loop(awaitable)
    future = _BRIDGE.submit(awaitable)
    try:
        return future.result()
    finally:
        future.cancel()  # a no-op once done; stops the coroutine when the wait was interrupted


def _run_on_own_loop(awaitable: Awaitable[T]) -> T:
    box: dict[str, Any] = {}
    context = contextvars.copy_context()

    def target() -> None:
        try:
            box["value"] = context.run(asyncio.run, _as_coroutine(awaitable))
        except BaseException as err:  # re-raised in the caller's thread
            box["error"] = err

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


async def _as_coroutine(awaitable: Awaitable[T]) -> T:
    return await awaitable


def iterate_sync(agen: AsyncIterator[T]) -> Iterator[T]:
    """Iterate an async iterator from sync code; items arrive as the async side produces them.

    The async side runs on the bridge loop; closing the sync iterator early cancels it and waits (30 s at
    most) until its cleanup has run.
    """
    items: queue.Queue[Any] = queue.Queue()

    async def pump() -> None:
        try:
            async for item in agen:
                items.put(item)
        except BaseException as err:  # cancellation included: the consumer sees why the stream ended
            items.put(_Raised(err))
        finally:
            await aclose(agen)
            items.put(_DONE)

    if _BRIDGE.on_it():
        yield from _iterate_on_own_loop(pump, items)
        return
    future = _BRIDGE.submit(pump())
    yield from _drain(items, lambda: future.cancel())


def _iterate_on_own_loop(pump: Callable[[], Awaitable[None]], items: queue.Queue[Any]) -> Iterator[Any]:
    """`iterate_sync` from the bridge loop's own thread: the async side on a loop of its own."""
    loop = asyncio.new_event_loop()
    task_box: dict[str, asyncio.Task[None]] = {}

    def target() -> None:
        task_box["task"] = loop.create_task(_as_coroutine(pump()))
        try:
            loop.run_until_complete(task_box["task"])
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    thread = threading.Thread(target=target, daemon=True)
    thread.start()

    def cancel() -> None:
        task = task_box.get("task")
        if task is not None and not loop.is_closed():
            loop.call_soon_threadsafe(task.cancel)

    yield from _drain(items, cancel)
    thread.join(timeout=30)


def _drain(items: queue.Queue[Any], cancel: Callable[[], object]) -> Iterator[Any]:
    """Yield the pump's items until it is done; if the consumer stops first, cancel the pump and wait for
    its cleanup."""
    finished = False
    try:
        while True:
            item = items.get()
            if item is _DONE:
                finished = True
                return
            if isinstance(item, _Raised):
                raise item.error
            yield item
    finally:
        if not finished:
            cancel()
            with contextlib.suppress(queue.Empty):
                while items.get(timeout=30) is not _DONE:
                    pass


async def aiterate_blocking(iterator: Iterator[T]) -> AsyncIterator[T]:
    """Iterate a blocking iterator from async code, each `next` on the engine's thread pool. When the consumer
    stops early (or is cancelled), the iterator is closed, after its `next` in flight returns if need be, so
    a generator's cleanup (e.g. ending a model's generation) always runs."""
    pending: Future[Any] | None = None
    try:
        while True:
            pending = _EXECUTOR.submit(contextvars.copy_context().run, _next_or_done, iterator)
            item = await asyncio.wrap_future(pending)
            if item is _DONE:
                return
            yield item
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            if pending is not None and not pending.done():
                pending.add_done_callback(lambda _: close())
            else:
                close()


async def aclose(iterator: AsyncIterator[Any]) -> None:
    """Close an async iterator that can be closed (an async generator) now, so its cleanup runs."""
    close = getattr(iterator, "aclose", None)
    if close is not None:
        await close()


def _next_or_done(iterator: Iterator[T]) -> T | object:
    return next(iterator, _DONE)


class _Raised:
    def __init__(self, error: BaseException):
        self.error = error
