"""The `llm-ensemble` command: ask one question, chat, list strategies; eval and bench for the numbers."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.table import Table

from ensemble_core import progress
from ensemble_core.cli_errors import failed, say
from ensemble_core.ensemble import Ensemble
from ensemble_core.errors import EnsembleError
from ensemble_core.types import Message, Result, Trace

app = typer.Typer(
    help="Several LLMs that answer as one. Without --config, the embedded default models answer.",
    no_args_is_help=True,
    add_completion=False,
)
out = Console()
err = Console(stderr=True)

StrategyOpt = Annotated[
    str | None, typer.Option("--strategy", "-s", help="strategy name (see `llm-ensemble strategies`)")
]
ParamOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--param", "-p", help="strategy parameter KEY=VALUE (VALUE as YAML: 3, 0.5, [a, b]); repeatable"
    ),
]
ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="ensemble config file (YAML or JSON)")]
MaxTokensOpt = Annotated[int, typer.Option("--max-tokens", help="most tokens in the answer")]
TemperatureOpt = Annotated[float, typer.Option("--temperature", help="0 = greedy")]
SystemOpt = Annotated[str | None, typer.Option("--system", help="a system message")]


@contextlib.contextmanager
def _spinner(message: str) -> Iterator[None]:
    with err.status(f"[dim]{message}…[/dim]", spinner="dots"):
        yield


def _build(strategy: str | None, params: list[str] | None, config: Path | None) -> Ensemble:
    """The ensemble from a config file or the embedded default; members load lazily, with a spinner."""
    progress.set_reporter(_spinner)
    from ensemble_core.config import load_config

    parsed = _parse_params(params or [])
    if config is not None:
        cfg = load_config(config)
        if strategy:
            cfg = cfg.model_copy(
                update={"strategy": cfg.strategy.model_copy(update={"name": strategy, "params": parsed})}
            )
        elif parsed:
            cfg.strategy.params.update(parsed)
        return Ensemble.from_config(cfg)
    from ensemble_core.defaults import default_ensemble

    return default_ensemble(strategy, **parsed)


def _parse_params(items: list[str]) -> dict[str, Any]:
    parsed: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"--param {item!r}: write KEY=VALUE")
        parsed[key.strip()] = yaml.safe_load(value)
    return parsed


def _trace_table(trace: Trace) -> Table:
    table = Table(
        title=f"strategy: {trace.strategy} · chosen: {trace.chosen} · {trace.reason}", title_justify="left"
    )
    for column in ("member", "role", "ok", "tokens in/out", "latency", "CPU", "prompt format", "score"):
        table.add_column(column)
    for call in trace.calls:
        table.add_row(
            call.member,
            call.role,
            "yes" if call.ok else f"[red]no[/red]: {call.error}",
            f"{call.usage.input_tokens}/{call.usage.output_tokens}",
            f"{call.latency_s:.2f}s",
            "" if call.cpu_s is None else f"{call.cpu_s:.2f}s",
            call.prompt_format or "",
            "" if call.score is None else f"{call.score:.3f}",
        )
    return table


def _json_result(result: Result) -> str:
    return json.dumps(
        {
            "answer": result.text,
            "tool_calls": [c.model_dump() for c in result.tool_calls],
            "finish_reason": result.finish_reason,
            "usage": {**result.usage.model_dump(), "total_tokens": result.usage.total_tokens},
            "trace": result.trace.model_dump(mode="json"),
        },
        indent=2,
        ensure_ascii=False,
    )


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="the question")],
    strategy: StrategyOpt = None,
    param: ParamOpt = None,
    config: ConfigOpt = None,
    max_tokens: MaxTokensOpt = 128,
    temperature: TemperatureOpt = 0.0,
    system: SystemOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the answer and the trace as JSON")] = False,
) -> None:
    """Ask one question; print the answer and a table of who said what."""
    try:
        ensemble = _build(strategy, param, config)
        messages = ([Message(role="system", content=system)] if system else []) + [
            Message(role="user", content=question)
        ]
        result = ensemble.run(messages, max_tokens=max_tokens, temperature=temperature)
    except EnsembleError as error:
        raise failed(error) from error
    if as_json:
        print(_json_result(result))
        return
    out.print(result.text.strip() or "(no text)")
    for call in result.tool_calls:
        out.print(f"[cyan]tool call[/cyan] {call.name}({json.dumps(call.arguments)})")
    err.print(_trace_table(result.trace))
    err.print(f"[dim]usage: {result.usage.input_tokens} in, {result.usage.output_tokens} out[/dim]")


@app.command()
def chat(
    strategy: StrategyOpt = None,
    param: ParamOpt = None,
    config: ConfigOpt = None,
    max_tokens: MaxTokensOpt = 256,
    temperature: TemperatureOpt = 0.0,
    system: SystemOpt = None,
) -> None:
    """Chat interactively; answers stream as the strategy decides them. Empty line, 'exit' or Ctrl-D ends."""
    try:
        ensemble = _build(strategy, param, config)
    except EnsembleError as error:
        raise failed(error) from error
    history: list[Message] = [Message(role="system", content=system)] if system else []
    while True:
        try:
            line = input("you> ").strip()
        except (EOFError, KeyboardInterrupt):
            break
        if line in ("", "exit", "quit"):
            break
        history.append(Message(role="user", content=line))
        answer: list[str] = []
        trace: Trace | None = None
        sys.stdout.write("ensemble> ")
        try:
            for delta in ensemble.stream(history, max_tokens=max_tokens, temperature=temperature):
                sys.stdout.write(delta.text)
                sys.stdout.flush()
                answer.append(delta.text)
                trace = delta.trace or trace
        except EnsembleError as error:
            sys.stdout.write("\n")
            say(error)
            history.pop()
            continue
        sys.stdout.write("\n")
        history.append(Message(role="assistant", content="".join(answer)))
        if trace is not None:
            err.print(
                f"[dim]{trace.strategy}: {trace.chosen} · {trace.reason} · {trace.usage.total_tokens} "
                "tokens[/dim]"
            )


@app.command()
def strategies(
    markdown: Annotated[
        bool, typer.Option("--markdown", help="print the Markdown source (docs/STRATEGIES.md)")
    ] = False,
) -> None:
    """List the registered strategies, their papers, what they need and their parameters."""
    from rich.markdown import Markdown

    from ensemble_core.strategies.reference import strategy_reference

    text = strategy_reference()
    if markdown:
        print(text, end="")
    else:
        out.print(Markdown(text))


@app.command()
def serve(
    strategy: StrategyOpt = None,
    param: ParamOpt = None,
    config: ConfigOpt = None,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8080,
    model_name: Annotated[str, typer.Option("--model-name", help="the model id clients see")] = "ensemble",
    trace: Annotated[
        str, typer.Option(help="trace returned with each answer: full, redacted or none")
    ] = "redacted",
    api_key: Annotated[
        list[str] | None,
        typer.Option(
            "--api-key",
            help="a key clients must send as 'Authorization: Bearer KEY' (repeatable); the environment "
            "variable LLM_ENSEMBLE_API_KEY holds more, separated by commas, and keeps them out of `ps`",
        ),
    ] = None,
    max_body_bytes: Annotated[
        int, typer.Option("--max-body-bytes", help="largest request body in bytes (413 above)")
    ] = 8 * 2**20,
    max_concurrent: Annotated[
        int, typer.Option("--max-concurrent", help="requests in flight per process (429 above)")
    ] = 128,
    request_timeout: Annotated[
        float, typer.Option("--request-timeout", help="seconds one request may take (504 after)")
    ] = 300.0,
) -> None:
    """Serve the ensemble as an OpenAI-compatible API (/v1/chat/completions, streaming included). The members
    load in the background while /ready answers 503."""
    import os

    import uvicorn
    from pydantic import SecretStr, ValidationError

    from ensemble_core.service import API_KEY_ENV, ServiceSettings, api_keys_from, create_app

    keys = [SecretStr(k) for k in api_key or []] + api_keys_from(os.environ.get(API_KEY_ENV))
    try:
        settings = ServiceSettings(
            model_name=model_name,
            trace=trace,
            api_keys=keys,
            max_body_bytes=max_body_bytes,
            max_concurrent=max_concurrent,
            request_timeout_s=request_timeout,
        )
    except ValidationError as error:
        raise typer.BadParameter(str(error)) from None
    if not keys and host not in ("127.0.0.1", "localhost", "::1"):
        err.print(
            f"[yellow]warning:[/yellow] serving on {host} without an API key: anyone who reaches the port "
            f"can use the ensemble; set {API_KEY_ENV} or pass --api-key"
        )
    try:
        ensemble = _build(strategy, param, config)
        app = create_app(ensemble, settings)
    except EnsembleError as error:
        raise failed(error) from error
    uvicorn.run(app, host=host, port=port)


from ensemble_core.eval.commands import bench_command, eval_command, tune_command  # noqa: E402

app.command("eval")(eval_command)
app.command("bench")(bench_command)
app.command("tune")(tune_command)


if __name__ == "__main__":
    app()
