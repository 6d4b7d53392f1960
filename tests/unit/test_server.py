"""`llm-ensemble serve`: the ensemble behind a real OpenAI-compatible HTTP server on loopback, called with the
official openai client and with our own OpenAICompatMember."""

from __future__ import annotations

import httpx
import openai
import pytest

from ensemble_core import Ensemble, ToolCall
from ensemble_core.members.openai_compat import OpenAICompatMember
from ensemble_core.members.scripted import ScriptedMember
from tests.serving import serving

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def _reply(request):
    last = request.messages[-1]
    if request.tools and last.role == "user":
        return ToolCall(id="call_1", name="get_weather", arguments={"city": "Paris"})
    if last.role == "tool":
        return f"It is {last.content} in Paris."
    return "The capital of France is Paris."


@pytest.fixture(scope="module")
def base_url():
    ensemble = Ensemble([ScriptedMember("down", [RuntimeError("boom")]), ScriptedMember("up", _reply)])
    with serving(ensemble) as url:
        yield url


@pytest.fixture()
def client(base_url):
    return openai.OpenAI(base_url=base_url, api_key="unused")


def test_plain_answer_with_usage_and_redacted_trace(client):
    completion = client.chat.completions.create(
        model="ensemble", messages=[{"role": "user", "content": "Capital of France?"}]
    )
    assert completion.choices[0].message.content == "The capital of France is Paris."
    assert completion.usage.completion_tokens == 6
    trace = completion.model_extra["ensemble_trace"]
    assert [c["member"] for c in trace["calls"]] == ["down", "up"] and trace["chosen"] == "up"
    assert trace["calls"][1]["text"] == "[31 characters]"  # redacted: no content leaves the service


def test_tool_call_round_trip(client):
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    first = client.chat.completions.create(model="ensemble", messages=messages, tools=[WEATHER])
    call = first.choices[0].message.tool_calls[0]
    assert first.choices[0].finish_reason == "tool_calls" and call.function.name == "get_weather"
    messages += [
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ]
    second = client.chat.completions.create(model="ensemble", messages=messages, tools=[WEATHER])
    assert second.choices[0].message.content == "It is sunny in Paris."


def test_streaming_chunks_add_up_and_carry_usage(client):
    stream = client.chat.completions.create(
        model="ensemble",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "The capital of France is Paris."
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) > 3
    assert chunks[-1].usage.completion_tokens == 6


def test_bad_requests_are_400_with_the_reason(client, base_url):
    with pytest.raises(openai.BadRequestError, match="no messages"):
        client.chat.completions.create(model="ensemble", messages=[])
    with pytest.raises(openai.BadRequestError, match="n must be 1"):
        client.chat.completions.create(model="ensemble", messages=[{"role": "user", "content": "x"}], n=2)
    image = [{"type": "image_url", "image_url": {"url": "data:,"}}]
    with pytest.raises(openai.BadRequestError, match="text only"):
        client.chat.completions.create(model="ensemble", messages=[{"role": "user", "content": image}])
    health = httpx.get(base_url.replace("/v1", "/health")).json()
    assert health["status"] == "ok" and set(health["members"]) == {"down", "up"}


def test_every_member_failing_is_a_502_that_says_why():
    ensemble = Ensemble([ScriptedMember("a", [RuntimeError("disk full")])])
    with serving(ensemble) as url:
        with pytest.raises(openai.InternalServerError, match="disk full"):
            openai.OpenAI(base_url=url, api_key="x", max_retries=0).chat.completions.create(
                model="ensemble", messages=[{"role": "user", "content": "q"}]
            )


def test_an_ensemble_is_a_member_of_another_ensemble(base_url):
    remote = OpenAICompatMember(base_url=base_url, model="ensemble", name="remote", score=False)
    outer = Ensemble([remote], "single", member="remote")
    assert outer.run("Capital of France?").text == "The capital of France is Paris."
    assert "".join(d.text for d in outer.stream("Capital of France?")) == "The capital of France is Paris."
