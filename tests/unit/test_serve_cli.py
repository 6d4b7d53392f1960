"""`llm-ensemble serve` as a user runs it, checked from outside: the command in its own process, its
member an OpenAI-compatible server on loopback (a scripted ensemble served here), the key from
LLM_ENSEMBLE_API_KEY. Without the key 401, with it 200; six overflowing seeds are 400s and the next good
request is a 200."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import yaml

from ensemble_core import Ensemble
from ensemble_core.members.scripted import ScriptedMember
from tests.llama_server import free_port
from tests.serving import serving

KEYS = "sk-one-0123456789, sk-two-9876543210"
GOOD = {"model": "ensemble", "messages": [{"role": "user", "content": "Capital of France?"}]}


@contextmanager
def serve_command(config: Path, *options: str) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    port = free_port()
    env = {**os.environ, "LLM_ENSEMBLE_API_KEY": KEYS}
    command = [
        sys.executable,
        "-m",
        "ensemble_core.cli",
        "serve",
        "--config",
        str(config),
        "--port",
        str(port),
    ]
    process = subprocess.Popen([*command, *options], env=env, stderr=subprocess.PIPE, text=True)
    root = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while process.poll() is None and time.monotonic() < deadline:
            try:
                if httpx.get(f"{root}/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        assert process.poll() is None, process.communicate()[1]
        yield root, process
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_serve_with_keys_from_the_environment_refuses_bad_seeds_and_recovers(tmp_path):
    upstream = Ensemble([ScriptedMember("paris", ["Paris."])])
    with serving(upstream) as upstream_url:
        config = tmp_path / "ensemble.yaml"
        member = {
            "type": "openai",
            "name": "up",
            "base_url": upstream_url,
            "model": "ensemble",
            "score": False,
        }
        config.write_text(yaml.safe_dump({"members": [member], "strategy": {"name": "fallback"}}))
        with serve_command(config, "--max-concurrent", "8") as (root, process):
            url = f"{root}/v1/chat/completions"
            assert httpx.post(url, json=GOOD).status_code == 401
            assert httpx.post(url, json=GOOD, headers={"Authorization": "Bearer sk-nope"}).status_code == 401
            headers = {"Authorization": "Bearer sk-two-9876543210"}
            answer = httpx.post(url, json=GOOD, headers=headers, timeout=30)
            assert answer.status_code == 200 and answer.json()["choices"][0]["message"]["content"] == "Paris."
            for _ in range(6):
                refused = httpx.post(url, json={**GOOD, "seed": 1208925819614629174706176}, headers=headers)
                assert refused.status_code == 400 and refused.json()["error"]["param"] == "seed"
            assert httpx.post(url, json=GOOD, headers=headers, timeout=30).status_code == 200
            assert httpx.get(f"{root}/health").json() == {"status": "ok", "members": {"up": "closed"}}
        assert process.stderr is not None
        logs = process.stderr.read()
    assert "Started server process" in logs, "the server's log was read"
    assert not any(key.strip() in logs for key in KEYS.split(","))
