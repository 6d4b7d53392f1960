"""Soak test of `llm-ensemble serve`: thousands of requests, a share of them malformed, many at a time,
against a real server process (uvicorn, loopback) whose members are scripted. Checks that every good
request gets its own answer (each asks about a numbered ticket, and the answer must name it), that no
request gets a 5xx, that the server's memory stays bounded, and that no circuit breaker is open at the end;
reports p50/p95 latency and throughput.

Run: python benchmarks/soak.py [--requests 2000] [--concurrency 50] [--malformed 0.25]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: The server's body limit in the soak, so that over-limit bodies (413) stay cheap to send.
MAX_BODY_BYTES = 2**20
#: Most the server's resident memory may grow from after the warm-up to the end.
MAX_GROWTH_MB = 50.0
WARM_UP = 100

_USER = {"role": "user", "content": "q"}
#: Malformed requests, each a body (bytes are sent as they are) and the statuses it may get.
MALFORMED: list[tuple[str, Any, set[int]]] = [
    ("content a list of strings", {"messages": [{"role": "user", "content": ["hi"]}]}, {400}),
    (
        "text part without text",
        {"messages": [{"role": "user", "content": [{"type": "text", "text": None}]}]},
        {400},
    ),
    ("nested part lists", {"messages": [{"role": "user", "content": [[{"type": "text"}]]}]}, {400}),
    ("tool_calls a string", {"messages": [_USER, {"role": "assistant", "tool_calls": "oops"}]}, {400}),
    (
        "tool call without function",
        {"messages": [_USER, {"role": "assistant", "tool_calls": [{"id": "1", "function": None}]}]},
        {400},
    ),
    (
        "tool_choice function a string",
        {"messages": [_USER], "tool_choice": {"type": "function", "function": "f"}},
        {400},
    ),
    ("messages a string", {"messages": "hello"}, {400}),
    ("overflowing seed", {"messages": [_USER], "seed": 1208925819614629174706176}, {400}),
    ("temperature 7", {"messages": [_USER], "temperature": 7}, {400}),
    ("unknown role", {"messages": [{"role": "wizard", "content": "q"}]}, {400}),
    ("unknown model", {"model": "gpt-9", "messages": [_USER]}, {404}),
    ("invalid JSON", b'{"messages": [{"role": "user", "content": "q"', {400}),
    (
        "body over the limit",
        {"messages": [{"role": "user", "content": "x" * (MAX_BODY_BYTES + 1000)}]},
        {413},
    ),
    ("no API key", None, {401}),
]


class SoakReport(BaseModel):
    """What one soak run found."""

    requests: int
    concurrency: int
    malformed: int
    good_answered: int
    good_wrong: list[str]
    statuses: dict[int, int]
    malformed_unexpected: list[str]
    server_errors: int
    p50_ms: float
    p95_ms: float
    seconds: float
    rss_after_warm_up_mb: float
    rss_end_mb: float
    breakers: dict[str, str]

    @property
    def growth_mb(self) -> float:
        return self.rss_end_mb - self.rss_after_warm_up_mb

    @property
    def passed(self) -> bool:
        good = self.requests - self.malformed
        return (
            self.good_answered == good
            and not self.good_wrong
            and not self.malformed_unexpected
            and self.server_errors == 0
            and self.growth_mb < MAX_GROWTH_MB
            and all(state == "closed" for state in self.breakers.values())
        )


KEY = "sk-soak-0123456789"


def serve(port: int) -> None:
    """The server process: two scripted members (answering with the ticket they were asked about) under
    `fallback`, behind the service's guard with an API key and a small body limit."""
    import uvicorn
    from pydantic import SecretStr

    from ensemble_core import Ensemble
    from ensemble_core.members.scripted import ScriptedMember
    from ensemble_core.service import ServiceSettings, create_app

    def ticket(request: Any) -> str:
        found = re.search(r"ticket (\d+)", request.messages[-1].content)
        return f"Ticket {found.group(1) if found else '?'} is answered."

    members = [ScriptedMember("a", ticket, delay_s=0.005), ScriptedMember("b", ticket, delay_s=0.005)]
    settings = ServiceSettings(api_keys=[SecretStr(KEY)], max_body_bytes=MAX_BODY_BYTES)
    app = create_app(Ensemble(members, "fallback"), settings)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


@contextmanager
def server_process() -> Iterator[tuple[str, int]]:
    """A `serve` process on a free loopback port: yields its root URL and pid once /ready answers 200."""
    from tests.llama_server import free_port

    port = free_port()
    process = subprocess.Popen([sys.executable, __file__, "--serve", str(port)])
    root = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{root}/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the soak server did not become ready")
            time.sleep(0.1)
        yield root, process.pid
    finally:
        process.terminate()
        process.wait(timeout=30)


def _good(i: int) -> dict[str, Any]:
    content = f"This is ticket {i}. Please answer it."
    return {"model": "ensemble", "messages": [{"role": "user", "content": content}], "stream": i % 10 == 0}


async def _send(client: httpx.AsyncClient, body: Any, key: bool = True) -> httpx.Response:
    headers = {"Authorization": f"Bearer {KEY}"} if key else {}
    if isinstance(body, bytes):
        headers["content-type"] = "application/json"
        return await client.post("/v1/chat/completions", content=body, headers=headers)
    return await client.post("/v1/chat/completions", json=body, headers=headers)


def _answer(response: httpx.Response, stream: bool) -> str:
    if not stream:
        return response.json()["choices"][0]["message"]["content"]
    text = []
    for line in response.text.splitlines():
        if line.startswith("data: {"):
            chunk = json.loads(line.removeprefix("data: "))
            if "error" in chunk:
                raise ValueError(chunk["error"]["message"])
            text.extend(c["delta"].get("content") or "" for c in chunk["choices"])
    return "".join(text)


async def soak(
    root: str, pid: int, n: int, concurrency: int, malformed_share: float, seed: int = 0
) -> SoakReport:
    """Send `n` requests, `malformed_share` of them malformed (drawn with `seed`), `concurrency` at once."""
    rng = random.Random(seed)
    plan = [rng.choice(MALFORMED) if rng.random() < malformed_share else None for _ in range(n)]
    slots = asyncio.Semaphore(concurrency)
    statuses: Counter[int] = Counter()
    latencies: list[float] = []
    wrong: list[str] = []
    unexpected: list[str] = []
    answered = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=root, timeout=60, limits=limits) as client:

        async def one(i: int) -> None:
            nonlocal answered
            bad = plan[i]
            async with slots:
                start = time.perf_counter()
                try:
                    if bad is None:
                        response = await _send(client, _good(i))
                    else:
                        response = await _send(client, bad[1] or _good(i), key=bad[1] is not None)
                except httpx.HTTPError as err:
                    (wrong if bad is None else unexpected).append(f"{i}: {type(err).__name__}: {err}")
                    return
                elapsed = time.perf_counter() - start
            statuses[response.status_code] += 1
            if bad is not None:
                if response.status_code not in bad[2]:
                    unexpected.append(f"{bad[0]}: {response.status_code} {response.text[:200]}")
                return
            latencies.append(elapsed)
            try:
                text = _answer(response, stream=_good(i)["stream"]) if response.status_code == 200 else None
            except (ValueError, KeyError) as err:
                text = f"unreadable ({err})"
            if text == f"Ticket {i} is answered.":
                answered += 1
            else:
                wrong.append(f"{i}: {response.status_code} {text or response.text[:200]!r}")

        start = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(min(WARM_UP, n))))
        rss_warm = rss_mb(pid)
        await asyncio.gather(*(one(i) for i in range(min(WARM_UP, n), n)))
        seconds = time.perf_counter() - start
        rss_end = rss_mb(pid)
        health = (await client.get("/health")).json()
    ordered = sorted(latencies)
    return SoakReport(
        requests=n,
        concurrency=concurrency,
        malformed=sum(bad is not None for bad in plan),
        good_answered=answered,
        good_wrong=wrong,
        statuses=dict(sorted(statuses.items())),
        malformed_unexpected=unexpected,
        server_errors=sum(count for status, count in statuses.items() if status >= 500),
        p50_ms=1000 * statistics.median(ordered) if ordered else 0.0,
        p95_ms=1000 * ordered[int(0.95 * (len(ordered) - 1))] if ordered else 0.0,
        seconds=seconds,
        rss_after_warm_up_mb=rss_warm,
        rss_end_mb=rss_end,
        breakers=health["members"],
    )


def markdown_row(report: SoakReport) -> str:
    """The report as a Markdown table (for docs/RESULTS.md)."""
    header = (
        "| requests | malformed | concurrency | good answered | 5xx | p50 | p95 | throughput | RSS growth "
        "| breakers at the end |"
    )
    breakers = ", ".join(f"{name}: {state}" for name, state in report.breakers.items())
    row = (
        f"| {report.requests} | {report.malformed} | {report.concurrency} | "
        f"{report.good_answered}/{report.requests - report.malformed} | {report.server_errors} | "
        f"{report.p50_ms:.0f} ms | {report.p95_ms:.0f} ms | {report.requests / report.seconds:.0f} req/s | "
        f"{report.growth_mb:+.1f} MB | {breakers} |"
    )
    return f"{header}\n|{'---|' * 10}\n{row}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--malformed", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    with server_process() as (root, pid):
        report = asyncio.run(soak(root, pid, args.requests, args.concurrency, args.malformed, args.seed))
    print(report.model_dump_json(indent=2))
    print(markdown_row(report))
    print("PASSED" if report.passed else "FAILED")
    sys.exit(0 if report.passed else 1)


if __name__ == "__main__":
    main()
