"""`llm-ensemble serve` under hostile and unusual requests, on a real loopback server: every client mistake
is a 400 in OpenAI's error shape found before any member is called, never counted by a circuit breaker, and
the keep-alive connection it came on serves the next request; and the OpenAI surface clients expect
(`model`, the `developer` role, `response_format`, `logprobs`, `/v1/models/{id}`)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from ensemble_core import Ensemble
from ensemble_core.errors import ContextWindowError
from ensemble_core.members.base import Capability
from ensemble_core.members.openai_compat import OpenAICompatMember
from ensemble_core.members.scripted import ScriptedMember
from ensemble_core.types import Generation, Request, TokenLogprob
from tests.serving import serving

GOOD = {"model": "ensemble", "messages": [{"role": "user", "content": "Capital of France?"}]}
ANSWER = "The capital of France is Paris."


def _user(content: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": content}]}


def _assistant(**fields: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", **fields}]}


WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}

#: Bodies that are valid JSON (or not JSON at all) but not a valid request, and what the error must say.
HOSTILE: dict[str, tuple[Any, str]] = {
    "content a list of strings": (_user(["hi"]), "messages.0"),
    "a text part without text": (_user([{"type": "text", "text": None}]), "messages.0"),
    "a list of lists of parts": (_user([[{"type": "text"}]]), "messages.0"),
    "an image part": (_user([{"type": "image_url", "image_url": {"url": "data:,"}}]), "text only"),
    "tool_calls a string": (_assistant(tool_calls="oops"), "tool_calls"),
    "a tool call without function": (_assistant(tool_calls=[{"id": "1", "function": None}]), "function"),
    "tool call arguments not JSON": (
        _assistant(tool_calls=[{"id": "1", "function": {"name": "f", "arguments": "{"}}]),
        "not valid JSON",
    ),
    "tool_choice function a string": (
        {**_user("q"), "tools": [WEATHER], "tool_choice": {"type": "function", "function": "f"}},
        "tool_choice",
    ),
    "tool_choice naming no given tool": (
        {**_user("q"), "tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "f"}}},
        "not among the tools",
    ),
    "tool_choice required without tools": ({**_user("q"), "tool_choice": "required"}, "at least one tool"),
    "tool parameters not a JSON schema": (
        {**_user("q"), "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": 5}}}]},
        "not a valid JSON Schema",
    ),
    "messages a string": ({"messages": "hello"}, "messages"),
    "no messages": ({"messages": []}, "no messages"),
    "an unknown role": ({"messages": [{"role": "wizard", "content": "q"}]}, "wizard"),
    "a tool turn without its call id": ({"messages": [{"role": "tool", "content": "x"}]}, "tool_call_id"),
    "an overflowing seed": ({**_user("q"), "seed": 1208925819614629174706176}, "seed"),
    "temperature above 2": ({**_user("q"), "temperature": 5}, "temperature"),
    "top_p of 0": ({**_user("q"), "top_p": 0}, "top_p"),
    "max_tokens of 0": ({**_user("q"), "max_tokens": 0}, "max_tokens"),
    "n of 2": ({**_user("q"), "n": 2}, "n must be 1"),
    "five stop strings": ({**_user("q"), "stop": list("abcde")}, "stop"),
    "an empty stop string": ({**_user("q"), "stop": [""]}, "non-empty"),
    "logit_bias": ({**_user("q"), "logit_bias": {"42": 5}}, "logit_bias"),
    "top_logprobs without logprobs": ({**_user("q"), "top_logprobs": 3}, "needs logprobs"),
    "a json_schema format without schema": (
        {**_user("q"), "response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
        "schema",
    ),
    "a body that is a JSON array": ([GOOD], "object"),
    "a body that is not JSON": (b'{"messages": [', "not valid JSON"),
    "an empty body": (b"", "not valid JSON"),
}


def _reply(request: Request) -> str:
    return f"system says {request.messages[0].content}" if request.messages[0].role == "system" else ANSWER


class LogprobMember(ScriptedMember):
    """A scripted member whose answers carry per-token log-probabilities, as a vLLM member's do."""

    async def agenerate(self, request: Request) -> Generation:
        generation = await super().agenerate(request)
        tokens = [TokenLogprob(token=w, logprob=-0.5) for w in generation.text.split(" ")]
        return generation.model_copy(update={"logprobs": tokens})


class CountingMember(ScriptedMember):
    """A scripted member that counts its prompt's tokens (one per word) without a call, like a local one."""

    def prompt_tokens(self, request: Request) -> int:
        return sum(len(m.content.split()) for m in request.messages)


@pytest.fixture(scope="module")
def served():
    members = [LogprobMember("a", _reply), ScriptedMember("b", _reply)]
    with serving(Ensemble(members, "fallback")) as url:
        yield url, members


@pytest.fixture()
def http(served):
    with httpx.Client(base_url=served[0], timeout=30) as client:
        yield client


def _post(http: httpx.Client, body: Any) -> httpx.Response:
    if isinstance(body, bytes):
        return http.post("/chat/completions", content=body, headers={"content-type": "application/json"})
    return http.post("/chat/completions", json=body)


def _openai_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and isinstance(error["message"], str)
    return error


@pytest.mark.parametrize("body,says", list(HOSTILE.values()), ids=list(HOSTILE))
def test_a_client_mistake_is_a_400_that_says_what_and_the_connection_lives_on(http, served, body, says):
    calls_before = [len(m.calls) for m in served[1]]
    error = _openai_error(_post(http, body), 400)
    assert error["type"] == "invalid_request_error" and says in error["message"]
    assert [len(m.calls) for m in served[1]] == calls_before, "no member was called"
    good = _post(http, GOOD)
    assert good.status_code == 200 and good.json()["choices"][0]["message"]["content"] == ANSWER


def test_six_overflowing_seeds_are_400s_and_no_circuit_opens(http, served):
    for _ in range(6):
        error = _openai_error(_post(http, {**GOOD, "seed": 2**80}), 400)
        assert error["param"] == "seed"
    assert _post(http, {**GOOD, "seed": 2**63 - 1}).status_code == 200
    health = httpx.get(served[0].removesuffix("/v1") + "/health").json()
    assert health == {"status": "ok", "members": {"a": "closed", "b": "closed"}}


def test_the_developer_role_is_a_system_turn(http):
    body = {"messages": [{"role": "developer", "content": "be brief"}, {"role": "user", "content": "q"}]}
    assert _post(http, body).json()["choices"][0]["message"]["content"] == "system says be brief"


def test_model_picks_the_ensemble_or_one_member(http):
    ensemble = _post(http, GOOD).json()
    assert ensemble["model"] == "ensemble" and ensemble["ensemble_trace"]["strategy"] == "fallback"
    alone = _post(http, {**GOOD, "model": "b"}).json()
    assert alone["model"] == "b" and alone["ensemble_trace"]["strategy"] == "single"
    assert [c["member"] for c in alone["ensemble_trace"]["calls"]] == ["b"]
    error = _openai_error(_post(http, {**GOOD, "model": "gpt-9"}), 404)
    assert error["code"] == "model_not_found" and "ensemble, a, b" in error["message"]


def test_models_lists_the_ensemble_and_its_members(http):
    listed = http.get("/models").json()
    assert [m["id"] for m in listed["data"]] == ["ensemble", "a", "b"]
    assert http.get("/models/a").json()["parent"] == "ensemble"
    assert _openai_error(http.get("/models/nope"), 404)["code"] == "model_not_found"
    assert _openai_error(http.get("/no/such/route"), 404)["type"] == "invalid_request_error"


def test_logprobs_come_back_in_openais_shape_and_a_remote_member_reads_them(served, http):
    body = _post(http, {**GOOD, "logprobs": True, "top_logprobs": 1}).json()
    content = body["choices"][0]["logprobs"]["content"]
    assert [t["token"] for t in content] == ANSWER.split(" ") and content[0]["logprob"] == -0.5
    assert _post(http, GOOD).json()["choices"][0]["logprobs"] is None, "only when asked"
    remote = OpenAICompatMember(served[0], "a", name="remote", score=False)  # what a cascade reads
    generation = remote.generate(Request(messages=[{"role": "user", "content": "q"}]))
    assert generation.mean_logprob == pytest.approx(-0.5)


def test_a_json_response_format_from_members_that_cannot_constrain_is_refused(http):
    for response_format in ({"type": "json_object"}, {"type": "json_schema", "json_schema": _SCHEMA}):
        error = _openai_error(_post(http, {**GOOD, "response_format": response_format}), 400)
        assert error["param"] == "response_format" and "'a', 'b' cannot" in error["message"]
    assert _post(http, {**GOOD, "response_format": {"type": "text"}}).status_code == 200


_SCHEMA = {
    "name": "city",
    "schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def _fake_upstream(content: str, seen: list[dict[str, Any]]) -> OpenAICompatMember:
    """An OpenAICompatMember whose server (in-process) answers every chat completion with `content`."""

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        message = {"role": "assistant", "content": content}
        return httpx.Response(
            200,
            json={
                "id": "x",
                "object": "chat.completion",
                "created": 0,
                "model": "m",
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
            },
        )

    transport = httpx.MockTransport(handler)
    return OpenAICompatMember(
        "http://upstream.test/v1",
        "m",
        name="vllm",
        score=False,
        max_retries=0,
        http_client=httpx.Client(transport=transport),
        async_http_client=httpx.AsyncClient(transport=transport),
    )


@pytest.mark.parametrize(
    "content,status", [('{"city": "Paris"}', 200), ('{"town": "Paris"}', 502), ("Paris", 502)]
)
def test_a_json_schema_reaches_the_server_and_the_answer_is_held_to_it(content, status):
    seen: list[dict[str, Any]] = []
    with serving(Ensemble([_fake_upstream(content, seen)], "fallback")) as url:
        body = {**GOOD, "response_format": {"type": "json_schema", "json_schema": _SCHEMA}}
        response = httpx.post(f"{url}/chat/completions", json=body, timeout=30)
    assert seen[0]["response_format"] == {"type": "json_schema", "json_schema": _SCHEMA}
    if status == 200:
        assert response.json()["choices"][0]["message"]["content"] == content
    else:
        assert _openai_error(response, 502)["code"] == "invalid_response_format"


def test_logprobs_are_refused_by_strategies_that_compose_answers_and_json_by_members_that_cannot():
    members = [
        ScriptedMember(n, [ANSWER], capabilities=frozenset({Capability.GENERATE, Capability.SCORE}))
        for n in ("a", "b")
    ]
    with serving(Ensemble(members, "span-fusion")) as url:
        response = httpx.post(f"{url}/chat/completions", json={**GOOD, "logprobs": True}, timeout=30)
        assert "'span-fusion'" in _openai_error(response, 400)["message"]
        body = {**GOOD, "response_format": {"type": "json_object"}}
        response = httpx.post(f"{url}/chat/completions", json=body, timeout=30)
        assert "'a', 'b' cannot" in _openai_error(response, 400)["message"]
    assert all(not m.calls for m in members)


def test_a_prompt_over_every_members_context_is_a_400_before_any_call():
    member = CountingMember("local", [ANSWER], context_window=100)
    with serving(Ensemble([member], "fallback")) as url:
        response = httpx.post(f"{url}/chat/completions", json=_user("word " * 200), timeout=30)
        assert _openai_error(response, 400)["code"] == "context_length_exceeded"
        assert "200 tokens" in response.json()["error"]["message"] and not member.calls
        assert httpx.post(f"{url}/chat/completions", json=GOOD, timeout=30).status_code == 200


def test_a_2_mb_prompt_refused_by_a_remote_member_is_the_clients_400_not_a_502():
    inner = ScriptedMember("small", [ContextWindowError("small", 500_000, 2048)])
    with serving(Ensemble([inner], "fallback")) as inner_url:
        remote = OpenAICompatMember(inner_url, "ensemble", name="remote", score=False, max_retries=0)
        with serving(Ensemble([remote], "fallback")) as url:
            client = openai.OpenAI(base_url=url, api_key="x", max_retries=0)
            for _ in range(remote.breaker.policy.failure_threshold + 1):
                with pytest.raises(openai.BadRequestError, match="context window of 2048"):
                    client.chat.completions.create(
                        model="ensemble", messages=[{"role": "user", "content": "x" * 2_000_000}]
                    )
    assert remote.breaker.state == "closed" and inner.breaker.state == "closed"
