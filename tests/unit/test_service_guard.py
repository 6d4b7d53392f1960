"""`llm-ensemble serve`'s guard and health, on a real loopback server: API keys, the body-size and
in-flight limits, the per-request deadline, `/health` as circuits open, and `/ready` while members load."""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
from pydantic import SecretStr

from ensemble_core import Ensemble
from ensemble_core.errors import ConfigError
from ensemble_core.members.breaker import BreakerPolicy
from ensemble_core.members.scripted import ScriptedMember
from ensemble_core.service import ServiceSettings, api_keys_from
from tests.serving import serving

GOOD = {"model": "ensemble", "messages": [{"role": "user", "content": "q"}]}
KEYS = ["sk-first-0123456789", "sk-second-9876543210"]


def _root(url: str) -> str:
    return url.removesuffix("/v1")


def test_without_the_key_401_with_either_key_200_and_health_stays_open(caplog):
    caplog.set_level(logging.DEBUG)
    with serving(Ensemble([ScriptedMember("a", ["hi"])]), api_keys=[SecretStr(k) for k in KEYS]) as url:
        for headers in ({}, {"Authorization": "Bearer sk-wrong"}, {"Authorization": KEYS[0]}):
            response = httpx.post(f"{url}/chat/completions", json=GOOD, headers=headers)
            assert response.status_code == 401 and response.headers["WWW-Authenticate"] == "Bearer"
            assert response.json()["error"]["code"] == "invalid_api_key"
        assert httpx.get(f"{url}/models").status_code == 401
        for key in KEYS:
            client = openai.OpenAI(base_url=url, api_key=key)
            assert client.chat.completions.create(**GOOD).choices[0].message.content == "hi"
        health = httpx.get(f"{_root(url)}/health")
        assert health.status_code == 200 and health.json()["status"] == "ok"
        schema = httpx.get(f"{_root(url)}/openapi.json").json()
        assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    settings = ServiceSettings(api_keys=[SecretStr(k) for k in KEYS])
    seen = caplog.text + repr(settings) + str(settings) + health.text + str(schema)
    assert not any(key in seen for key in KEYS)


def test_keys_from_the_environment_split_on_commas_and_spaces():
    assert [k.get_secret_value() for k in api_keys_from(" a,b  c,,\n")] == ["a", "b", "c"]
    assert api_keys_from(None) == []


def test_a_body_over_the_limit_is_a_413_whether_declared_or_chunked():
    with serving(Ensemble([ScriptedMember("a", ["hi"])]), max_body_bytes=4096) as url:
        big = {"messages": [{"role": "user", "content": "x" * 5000}]}
        response = httpx.post(f"{url}/chat/completions", json=big)
        assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"

        def chunks():
            yield b'{"messages": [{"role": "user", "content": "'
            for _ in range(10):
                yield b"x" * 1000
            yield b'"}]}'

        chunked = httpx.post(f"{url}/chat/completions", content=chunks())
        assert chunked.status_code == 413
        assert httpx.post(f"{url}/chat/completions", json=GOOD).status_code == 200


def test_requests_beyond_the_in_flight_limit_get_429_with_retry_after():
    slow = ScriptedMember("slow", ["hi"], delay_s=1.0)
    with serving(Ensemble([slow]), max_concurrent=2, retry_after_s=3) as url:
        with ThreadPoolExecutor(6) as pool:
            responses = list(pool.map(lambda _: httpx.post(f"{url}/chat/completions", json=GOOD), range(6)))
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) == {200, 429} and statuses.count(200) >= 2, statuses
    busy = next(r for r in responses if r.status_code == 429)
    assert busy.headers["Retry-After"] == "3" and busy.json()["error"]["type"] == "rate_limit_error"


@pytest.mark.parametrize("stream", [False, True])
def test_a_request_past_its_deadline_is_a_504(stream):
    stuck = ScriptedMember("stuck", ["hi"], delay_s=30)
    with serving(Ensemble([stuck]), request_timeout_s=0.5) as url:
        response = httpx.post(f"{url}/chat/completions", json={**GOOD, "stream": stream}, timeout=10)
    assert response.status_code == 504 and response.json()["error"]["code"] == "deadline_exceeded"


def test_health_is_degraded_while_a_circuit_is_open_and_unavailable_when_all_are():
    policy = BreakerPolicy(failure_threshold=1, reset_after_s=60)
    down = ScriptedMember("down", [RuntimeError("boom")], breaker=policy)
    up = ScriptedMember("up", ["hi"], breaker=policy)
    ensemble = Ensemble([down, up], "fallback")
    with serving(ensemble) as url:
        assert httpx.post(f"{url}/chat/completions", json=GOOD).status_code == 200
        health = httpx.get(f"{_root(url)}/health")
        assert health.status_code == 200
        assert health.json() == {"status": "degraded", "members": {"down": "open", "up": "closed"}}
        up.script = [RuntimeError("boom")]
        assert httpx.post(f"{url}/chat/completions", json=GOOD).status_code == 502
        assert httpx.get(f"{_root(url)}/health").status_code == 503
        assert httpx.get(f"{_root(url)}/health").json()["status"] == "unavailable"
        closed = httpx.post(f"{url}/chat/completions", json=GOOD)
        assert closed.status_code == 503 and closed.json()["error"]["code"] == "circuit_open"
        assert 50 <= int(closed.headers["Retry-After"]) <= 60


class SlowLoading(ScriptedMember):
    """A member whose `load` waits until the test lets it finish (or fails, when told to)."""

    def __init__(self, *args, fail: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.loaded = threading.Event()
        self.fail = fail

    async def aload(self) -> None:
        while not self.loaded.is_set():
            await asyncio.sleep(0.02)
        if self.fail:
            raise ConfigError("no weights at /models/secret-path")


def test_ready_is_503_while_members_load_then_200():
    member = SlowLoading("a", ["hi"])
    with serving(Ensemble([member]), ready=False) as url:
        assert httpx.get(f"{_root(url)}/ready").json() == {"status": "loading", "error": None}
        assert httpx.get(f"{_root(url)}/health").json()["status"] == "loading"
        early = httpx.post(f"{url}/chat/completions", json=GOOD)
        assert early.status_code == 503 and early.json()["error"]["code"] == "loading"
        member.loaded.set()
        for _ in range(100):
            if httpx.get(f"{_root(url)}/ready").status_code == 200:
                break
            threading.Event().wait(0.05)
        assert httpx.post(f"{url}/chat/completions", json=GOOD).status_code == 200


def test_a_failed_load_is_reported_by_kind_and_every_request_says_why():
    member = SlowLoading("a", ["hi"], fail=True)
    member.loaded.set()
    with serving(Ensemble([member]), ready=False) as url:
        for _ in range(100):
            ready = httpx.get(f"{_root(url)}/ready")
            if ready.json()["status"] != "loading":
                break
            threading.Event().wait(0.05)
        assert ready.status_code == 503 and ready.json() == {"status": "failed", "error": "ConfigError"}
        assert httpx.get(f"{_root(url)}/health").status_code == 503
        response = httpx.post(f"{url}/chat/completions", json=GOOD)
        assert response.status_code == 503 and "no weights" in response.json()["error"]["message"]
