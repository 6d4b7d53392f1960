"""Bridges between sync and async code: run a coroutine from sync code, iterate an async generator from sync
code, and iterate a blocking iterator from async code without blocking the event loop."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import queue
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
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


def run_sync(awaitable: Awaitable[T]) -> T:
    """Run a coroutine to completion from sync code, also when the calling thread already runs a loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_as_coroutine(awaitable))
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(_as_coroutine(awaitable))
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

    The async side runs on its own loop in a daemon thread; closing the sync iterator early cancels it.
    """
    items: queue.Queue[Any] = queue.Queue()
    loop = asyncio.new_event_loop()

    async def pump() -> None:
        try:
            async for item in agen:
                items.put(item)
        except BaseException as err:
            items.put(_Raised(err))
        finally:
            items.put(_DONE)

    task_box: dict[str, asyncio.Task[None]] = {}

    def target() -> None:
        asyncio.set_event_loop(loop)
        task_box["task"] = loop.create_task(pump())
        try:
            loop.run_until_complete(task_box["task"])
        except BaseException:
            pass
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    try:
        while True:
            item = items.get()
            if item is _DONE:
                return
            if isinstance(item, _Raised):
                raise item.error
            yield item
    finally:
        task = task_box.get("task")
        if task is not None and not task.done():
            loop.call_soon_threadsafe(task.cancel)
        thread.join(timeout=30)


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
