"""Progress reports for slow one-time work (loading and converting models). Silent by default; the CLI
installs a reporter that shows a spinner."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

Reporter = Callable[[str], AbstractContextManager[object]]

_reporter: Reporter | None = None


def set_reporter(reporter: Reporter | None) -> None:
    """Install (or remove, with None) the function that shows what is loading: message -> context manager."""
    global _reporter
    _reporter = reporter


@contextlib.contextmanager
def reporting(message: str) -> Iterator[None]:
    if _reporter is None:
        yield
        return
    with _reporter(message):
        yield
