"""How every command reports an EnsembleError: the message as plain text on stderr, then exit status 2
(or, in `chat`, the next question)."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape

from ensemble_core.errors import EnsembleError

_stderr = Console(stderr=True)


def say(error: EnsembleError) -> None:
    """Print the error on stderr, escaped: a message may hold brackets, such as an extra's name."""
    _stderr.print(f"[red]error:[/red] {escape(str(error))}")


def failed(error: EnsembleError) -> typer.Exit:
    """Print the error and return the exit to raise."""
    say(error)
    return typer.Exit(2)
