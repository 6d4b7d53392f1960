"""How every command reports an EnsembleError: the message as plain text on stderr, exit status 2."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape

from ensemble_core.errors import EnsembleError

_stderr = Console(stderr=True)


def failed(error: EnsembleError) -> typer.Exit:
    """Print the error (escaped: a message may hold brackets, such as an extra's name) and return the exit
    to raise."""
    _stderr.print(f"[red]error:[/red] {escape(str(error))}")
    return typer.Exit(2)
