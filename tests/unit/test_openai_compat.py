"""OpenAICompatMember against an in-process fake server (httpx.MockTransport): request mapping, response
parsing, streaming, secret hiding, and the prompt-logprob alignment probe on synthetic responses."""

from __future__ import annotations

import json
import logging
import re
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import openai
import pytest

from ensemble_core import Ensemble
from ensemble_core.errors import AllMembersFailedError, CapabilityError, MemberError, RequestRejectedError
from ensemble_core.members.base import Capability
from ensemble_core.members.openai_compat import OpenAICompatMember
from ensemble_core.members.prompt_logprobs import PROBE_TEXT, EchoAlignment, EchoLogprobs, detect_alignment
from ensemble_core.members.scripted import ScriptedMember
from ensemble_core.types import Message, Params, Request, ToolCall, ToolSpec, merge_tool_call_chunks
from tests.llama_server import free_port

SECRET = "sk-test-0123456789abcdef"
Handler = Callable[[str, dict[str, Any]], httpx.Response]


class FakeServer:
    """Answers each request with `handler(path, json_body)` and keeps every request it saw."""

    def __init__(self, handler: Handler):
        self.handler = handler
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.handler(request.url.path, json.loads(request.content or b"{}"))

    def bodies(self, path: str) -> list[dict[str, Any]]:
        return [json.loads(r.content) for r in self.requests if r.url.path == path]

    def member(self, **kwargs: Any) -> OpenAICompatMember:
        transport = httpx.MockTransport(self)
        options: dict[str, Any] = {"name": "fake", "max_retries": 0, "api_key": SECRET}
        options.update(kwargs)
        return OpenAICompatMember(
            "http://fake.test/v1",
            "fake-model",
            http_client=httpx.Client(transport=transport),
            async_http_client=httpx.AsyncClient(transport=transport),
            **options,
        )


def chat_response(
    message: dict[str, Any], finish: str = "stop", logprobs: list[tuple[str, float]] | None = None
):
    content = [{"token": t, "logprob": v, "bytes": None, "top_logprobs": []} for t, v in logprobs or []]
    return httpx.Response(
        200,
        json={
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 0,
            "model": "fake-model",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", **message},
                    "finish_reason": finish,
                    "logprobs": {"content": content} if logprobs else None,
                }
            ],
            "usage": {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14},
        },
    )


def sse(chunks: list[dict[str, Any]]) -> httpx.Response:
    head = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m"}
    body = "".join(f"data: {json.dumps({**head, **c})}\n\n" for c in chunks)
    return httpx.Response(200, text=body + "data: [DONE]\n\n", headers={"content-type": "text/event-stream"})


def choice(delta: dict[str, Any], finish: str | None = None, logprobs: int = 0) -> dict[str, Any]:
    content = [{"token": "t", "logprob": -0.5, "bytes": None, "top_logprobs": []}] * logprobs
    return {
        "index": 0,
        "delta": delta,
        "finish_reason": finish,
        "logprobs": {"content": content} if logprobs else None,
    }


def tool_call(
    arguments: str, index: int = 0, call_id: str | None = "call_1", name: str | None = "get_weather"
):
    return {
        "index": index,
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }


def ask(text: str = "Hi", **fields: Any) -> Request:
    return Request(messages=[Message(role="user", content=text)], **fields)


WEATHER = ToolSpec(
    name="get_weather", parameters={"type": "object", "properties": {"city": {"type": "string"}}}
)


# request mapping ----------
def test_messages_params_tools_and_tool_choice_are_mapped() -> None:
    server = FakeServer(lambda path, body: chat_response({"content": "ok"}))
    call = ToolCall(id="call_7", name="get_weather", arguments={"city": "Paris"})
    request = Request(
        messages=[
            Message(role="system", content="Be brief."),
            Message(role="user", content="Weather in Paris?"),
            Message(role="assistant", tool_calls=[call]),
            Message(role="tool", content="sunny", tool_call_id="call_7"),
            Message(role="user", content="And so?"),
        ],
        tools=[WEATHER],
        tool_choice="get_weather",
        params=Params(max_tokens=17, temperature=0.7, top_p=0.9, stop=["\n\n"], seed=3),
    )
    server.member().generate(request)
    (body,) = server.bodies("/v1/chat/completions")
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_7",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "content": "sunny", "tool_call_id": "call_7"},
        {"role": "user", "content": "And so?"},
    ]
    assert (body["model"], body["max_tokens"], body["temperature"], body["top_p"]) == (
        "fake-model",
        17,
        0.7,
        0.9,
    )
    assert (body["stop"], body["seed"]) == (["\n\n"], 3)
    assert body["tools"] == [WEATHER.as_openai()]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert body["logprobs"] is True and "stream" not in body


@pytest.mark.parametrize("choice_name", ["auto", "none", "required"])
def test_standard_tool_choices_pass_through(choice_name: str) -> None:
    server = FakeServer(lambda path, body: chat_response({"content": "ok"}))
    server.member().generate(ask(tools=[WEATHER], tool_choice=choice_name))
    assert server.bodies("/v1/chat/completions")[0]["tool_choice"] == choice_name


# response parsing ----------
def test_answer_with_logprobs_and_usage() -> None:
    server = FakeServer(
        lambda path, body: chat_response({"content": "Paris."}, logprobs=[("Paris", -0.2), (".", -0.1)])
    )
    generation = server.member().generate(ask())
    assert (generation.text, generation.finish_reason, generation.member) == ("Paris.", "stop", "fake")
    assert [(t.token, t.logprob) for t in generation.logprobs or []] == [("Paris", -0.2), (".", -0.1)]
    assert (generation.usage.input_tokens, generation.usage.output_tokens) == (11, 3)
    assert generation.latency_s > 0


def test_tool_calls_are_parsed() -> None:
    server = FakeServer(
        lambda path, body: chat_response(
            {"content": None, "tool_calls": [tool_call('{"city": "Paris"}')]}, "tool_calls"
        )
    )
    generation = server.member().generate(ask(tools=[WEATHER]))
    assert generation.tool_calls == [ToolCall(id="call_1", name="get_weather", arguments={"city": "Paris"})]
    assert (generation.text, generation.finish_reason) == ("", "tool_calls")


@pytest.mark.parametrize(
    ("arguments", "problem"), [('{"city": "Par', "not valid JSON"), ('["Paris"]', "not a JSON object")]
)
def test_bad_tool_arguments_fail_the_member_clearly(arguments: str, problem: str) -> None:
    server = FakeServer(
        lambda path, body: chat_response({"tool_calls": [tool_call(arguments)]}, "tool_calls")
    )
    with pytest.raises(MemberError, match=f"'get_weather'.*{problem}"):
        server.member().generate(ask(tools=[WEATHER]))


def test_http_errors_become_member_errors() -> None:
    server = FakeServer(lambda path, body: httpx.Response(404, json={"error": {"message": "no such model"}}))
    with pytest.raises(MemberError, match="fake.*HTTP 404.*no such model"):
        server.member().generate(ask())


@pytest.mark.parametrize("status", [400, 413, 422])
def test_a_refused_request_is_the_requests_fault_not_the_members(status: int) -> None:
    server = FakeServer(
        lambda path, body: httpx.Response(status, json={"error": {"message": "context too long"}})
    )
    member = server.member()
    with pytest.raises(RequestRejectedError, match=f"'fake' refused the request: HTTP {status}.*too long"):
        member.generate(ask())
    ensemble = Ensemble([member], "single", member="fake")
    for _ in range(member.breaker.policy.failure_threshold + 1):
        with pytest.raises(RequestRejectedError):
            ensemble.run("q")
    assert member.breaker.state == "closed"


def test_a_body_that_is_not_json_is_a_member_error() -> None:
    json_type = {"content-type": "application/json"}
    server = FakeServer(lambda path, body: httpx.Response(200, content=b"<html>", headers=json_type))
    with pytest.raises(MemberError, match="not valid JSON"):
        server.member().generate(ask())


# streaming ----------
def test_stream_text_and_cumulative_usage_counted_once() -> None:
    usage = [{"prompt_tokens": 9, "completion_tokens": n, "total_tokens": 9 + n} for n in (1, 2, 2)]
    server = FakeServer(
        lambda path, body: sse(
            [
                {"choices": [choice({"role": "assistant", "content": "Par"})], "usage": usage[0]},
                {"choices": [choice({"content": "is"})], "usage": usage[1]},
                {"choices": [choice({}, "stop")], "usage": usage[2]},
            ]
        )
    )
    deltas = list(server.member().stream(ask()))
    assert [d.text for d in deltas if not d.final] == ["Par", "is"]
    assert deltas[-1].final and deltas[-1].finish_reason == "stop"
    assert (deltas[-1].usage.input_tokens, deltas[-1].usage.output_tokens) == (9, 2)
    assert server.bodies("/v1/chat/completions")[0]["stream_options"] == {"include_usage": True}


def test_stream_without_usage_counts_answer_tokens_from_logprobs() -> None:
    server = FakeServer(
        lambda path, body: sse(
            [{"choices": [choice({"content": w}, logprobs=1)]} for w in ("The", " answer", ".")]
            + [{"choices": [choice({}, "stop")]}]
        )
    )
    final = list(server.member().stream(ask()))[-1]
    assert (final.usage.input_tokens, final.usage.output_tokens) == (0, 3)


def test_streamed_tool_calls_name_and_id_once_per_call() -> None:
    # llama-cpp-python repeats the id and the name in every fragment of a call
    fragments = ['{"city"', ': "Par', 'is"}']
    server = FakeServer(
        lambda path, body: sse(
            [{"choices": [choice({"tool_calls": [tool_call(f)]})]} for f in fragments]
            + [
                {
                    "choices": [
                        choice({"tool_calls": [tool_call("{}", index=1, call_id="call_2", name="now")]})
                    ]
                }
            ]
            + [{"choices": [choice({}, "tool_calls")]}]
        )
    )
    deltas = list(server.member().stream(ask(tools=[WEATHER])))
    chunks = [c for d in deltas for c in d.tool_call_chunks]
    assert [(c.id, c.name) for c in chunks] == [
        ("call_1", "get_weather"),
        (None, None),
        (None, None),
        ("call_2", "now"),
    ]
    assert merge_tool_call_chunks(chunks) == [
        ToolCall(id="call_1", name="get_weather", arguments={"city": "Paris"}),
        ToolCall(id="call_2", name="now", arguments={}),
    ]
    assert deltas[-1].finish_reason == "tool_calls"


async def test_async_stream_with_bad_tool_arguments_fails_at_the_end() -> None:
    server = FakeServer(
        lambda path, body: sse(
            [
                {"choices": [choice({"tool_calls": [tool_call('{"city": ')]})]},
                {"choices": [choice({}, "tool_calls")]},
            ]
        )
    )
    seen = []
    with pytest.raises(MemberError, match="not valid JSON"):
        async for delta in server.member().astream(ask(tools=[WEATHER])):
            seen.append(delta)
    assert seen and not any(d.final for d in seen)


async def test_async_generate() -> None:
    server = FakeServer(lambda path, body: chat_response({"content": "Paris."}))
    assert (await server.member().agenerate(ask())).text == "Paris."


# secrets and keys ----------
def test_the_key_is_sent_but_never_shown(caplog: pytest.LogCaptureFixture) -> None:
    def unauthorised(path: str, body: dict[str, Any]) -> httpx.Response:
        return httpx.Response(401, json={"error": {"message": f"Incorrect API key provided: {SECRET}"}})

    caplog.set_level(logging.DEBUG)
    server = FakeServer(unauthorised)
    member = server.member()
    assert SECRET not in repr(member) and SECRET not in str(member.api_key)
    with pytest.raises(MemberError) as raised:
        member.generate(ask())
    assert server.requests[0].headers["authorization"] == f"Bearer {SECRET}"
    assert "HTTP 401" in str(raised.value) and SECRET not in str(raised.value)
    assert raised.value.__cause__ is None
    with pytest.raises(AllMembersFailedError) as all_failed:
        Ensemble([member], "fallback").run("Hi")
    assert SECRET not in str(all_failed.value)
    result = Ensemble([member, ScriptedMember("backup", ["fine"])], "fallback").run("Hi")
    assert result.text == "fine" and "HTTP 401" in (result.trace.calls[0].error or "")
    assert SECRET not in result.trace.model_dump_json()
    assert any(r.name.startswith(("openai", "httpx")) for r in caplog.records), (
        "the client's logs were captured"
    )
    assert SECRET not in caplog.text


def test_without_a_key_a_placeholder_is_sent_not_the_environment_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    server = FakeServer(lambda path, body: chat_response({"content": "ok"}))
    server.member(api_key=None).generate(ask())
    assert server.requests[0].headers["authorization"] == "Bearer EMPTY"


# prompt log-probabilities and score ----------
def tokens_of(text: str) -> list[str]:
    return re.findall(r" ?[A-Za-z]+| ?\d+|[^A-Za-z\d ]| ", text)


def true_logprob(i: int) -> float:
    """The synthetic model's log-probability of the i-th token (the token is always its argmax)."""
    return -0.05 - 0.01 * i


def echo(text: str, alignment: EchoAlignment | None, top_k: int = 5) -> dict[str, Any]:
    """`logprobs` of an echoed completion of `text` plus one generated token, as an aligned server, a server
    shifted by one, or (None) one whose numbers are noise, would report them."""
    tokens = [*tokens_of(text), "!"]
    offsets = [sum(len(t) for t in tokens[:i]) for i in range(len(tokens))]
    token_logprobs: list[float | None] = []
    top: list[dict[str, float] | None] = []
    for i, token in enumerate(tokens):
        if alignment is EchoAlignment.ALIGNED:
            token_logprobs.append(true_logprob(i))
            top.append({token: true_logprob(i), "<alt>": true_logprob(i) - 3.0})
        elif alignment is EchoAlignment.SHIFTED:
            following = tokens[i + 1] if i + 1 < len(tokens) else "<eos>"
            row = {following: true_logprob(i + 1), "<alt>": -5.0}
            row = dict(list(row.items())[:top_k])
            token_logprobs.append(-12.0)
            top.append({**row, token: -12.0})
        else:
            token_logprobs.append(-2.0)
            top.append({"<alt>": -1.0, token: -2.0})
    token_logprobs[0], top[0] = None, None
    return {"tokens": tokens, "text_offset": offsets, "token_logprobs": token_logprobs, "top_logprobs": top}


def completions_server(alignment: EchoAlignment | None, score_top_k: int = 5) -> FakeServer:
    def handler(path: str, body: dict[str, Any]) -> httpx.Response:
        assert path == "/v1/completions" and body["echo"] is True
        choice = {"index": 0, "text": body["prompt"] + "!", "finish_reason": "length"}
        choice["logprobs"] = echo(
            body["prompt"], alignment, 5 if body["prompt"] == PROBE_TEXT else score_top_k
        )
        return httpx.Response(
            200,
            json={"id": "c", "object": "text_completion", "created": 0, "model": "m", "choices": [choice]},
        )

    return FakeServer(handler)


@pytest.mark.parametrize("alignment", [EchoAlignment.ALIGNED, EchoAlignment.SHIFTED])
def test_detect_alignment_on_synthetic_probes(alignment: EchoAlignment) -> None:
    check = detect_alignment(EchoLogprobs.from_response(echo(PROBE_TEXT, alignment)))
    assert check.alignment is alignment, check.reason


def test_noise_fits_neither_alignment() -> None:
    check = detect_alignment(EchoLogprobs.from_response(echo(PROBE_TEXT, None)))
    assert check.alignment is None and "neither" in check.reason


@pytest.mark.parametrize("alignment", [EchoAlignment.ALIGNED, EchoAlignment.SHIFTED])
async def test_score_reads_the_true_values_whatever_the_alignment(alignment: EchoAlignment) -> None:
    server = completions_server(alignment)
    member = server.member()
    pairs = [("The capital of France is", " Paris"), ("The capital of France is", " a big city")]
    scores = member.score(pairs)
    prompt_tokens = len(tokens_of(pairs[0][0]))
    assert scores[0].sum_logprob == pytest.approx(true_logprob(prompt_tokens))
    assert scores[1].sum_logprob == pytest.approx(sum(true_logprob(prompt_tokens + i) for i in range(3)))
    assert [s.n_tokens for s in scores] == [1, 3]
    assert [s.sum_logprob for s in await member.ascore(pairs)] == [s.sum_logprob for s in scores]
    probes = [b for b in server.bodies("/v1/completions") if b["prompt"] == PROBE_TEXT]
    assert len(probes) == 1, "the probe runs once per member"
    asked = {b["logprobs"] for b in server.bodies("/v1/completions") if b["prompt"] != PROBE_TEXT}
    assert asked == {1 if alignment is EchoAlignment.ALIGNED else member.score_top_logprobs}


def test_shifted_server_with_a_token_outside_the_top_says_what_to_raise() -> None:
    member = completions_server(EchoAlignment.SHIFTED, score_top_k=0).member()
    with pytest.raises(MemberError, match="score_top_logprobs"):
        member.score([("The capital of France is", " Paris")])


def test_a_server_with_unreadable_prompt_logprobs_lacks_score() -> None:
    server = completions_server(None)
    member = server.member()
    assert member.has(Capability.SCORE) and server.requests == [], "nothing is asked before load()"
    member.load()
    assert not member.has(Capability.SCORE) and Capability.SCORE not in member.capabilities
    with pytest.raises(CapabilityError, match="'score'.*fit neither"):
        member.score([("a", " b")])
    assert len(server.requests) == 1, "the probe's finding is cached"


def test_a_server_without_completions_lacks_score() -> None:
    member = FakeServer(
        lambda path, body: httpx.Response(404, json={"error": {"message": "Not Found"}})
    ).member()
    member.load()
    with pytest.raises(CapabilityError, match="'score'.*HTTP 404"):
        member.require(Capability.SCORE, "strategy 'x'")


def test_a_probe_answered_with_invalid_json_is_a_named_error() -> None:
    server = FakeServer(
        lambda path, body: httpx.Response(200, content=b"{oops", headers={"content-type": "application/json"})
    )
    ensemble = Ensemble([server.member()], "span-fusion")
    with pytest.raises(CapabilityError, match="'score'.*not valid JSON"):
        ensemble.load()


def test_score_setting_true_or_false_skips_the_probe() -> None:
    server = completions_server(EchoAlignment.ALIGNED)
    assert server.member(score=True).has(Capability.SCORE)
    assert not server.member(score=False).has(Capability.SCORE)
    assert server.requests == []
    with pytest.raises(CapabilityError, match="score=False"):
        server.member(score=False).score([("a", " b")])


def test_an_unreachable_server_lacks_score_and_says_why() -> None:
    member = OpenAICompatMember(
        f"http://127.0.0.1:{free_port()}/v1", "m", name="dead", timeout_s=2, max_retries=0
    )
    member.load()
    assert "could not reach the server" in member.probe().reason
    assert member.has(Capability.SCORE), "a server that is down now may be up at the next call"
    with pytest.raises(MemberError, match="could not reach the server"):
        member.score([("a", " b")])


def test_the_probe_is_asked_again_after_the_server_was_unreachable() -> None:
    answering = completions_server(EchoAlignment.ALIGNED)

    def handler(path: str, body: dict[str, Any]) -> httpx.Response:
        if len(server.requests) == 1:
            raise httpx.ConnectError("connection refused")
        return answering.handler(path, body)

    server = FakeServer(handler)
    member = server.member()
    assert member.probe().alignment is None
    assert member.probe().alignment is EchoAlignment.ALIGNED and member.has(Capability.SCORE)


def test_no_timeout_given_means_the_clients_default_not_none() -> None:
    member = OpenAICompatMember("http://127.0.0.1:1/v1", "m", timeout_s=None)
    assert member.client.timeout == openai.DEFAULT_TIMEOUT


def test_a_stream_cut_off_before_its_finish_reason_fails_the_member() -> None:
    server = FakeServer(lambda path, body: sse([{"choices": [choice({"content": "The capital"})]}]))
    with pytest.raises(MemberError, match="without a finish reason"):
        list(server.member().stream(ask()))


@contextmanager
def silent_server() -> Iterator[str]:
    """The base URL of a loopback port that takes connections (the kernel completes them) and never
    answers: a hung server."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/v1"


def test_construction_never_waits_on_a_server_that_never_answers() -> None:
    with silent_server() as url:
        start = time.monotonic()
        ensemble = Ensemble([OpenAICompatMember(url, "m", name="silent")], "span-fusion")
        assert time.monotonic() - start < 5
        member = OpenAICompatMember(url, "m", name="silent", timeout_s=1, max_retries=0)
        ensemble = Ensemble([member], "span-fusion")
        start = time.monotonic()
        with pytest.raises(AllMembersFailedError, match="silent: timed out"):
            ensemble.run("q", max_tokens=4)
        assert time.monotonic() - start < 5
        start = time.monotonic()
        ensemble.load()  # the probe gives up within the member's timeout; the next call asks again
        assert time.monotonic() - start < 5 and "timed out" in member.probe().reason
