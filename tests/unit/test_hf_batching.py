"""Concurrent requests to one local model are served in micro-batches, each row with its own answer."""

from __future__ import annotations

import asyncio

from ensemble_core.members.hf.generation import GenerationRun
from ensemble_core.types import Params, Request, to_messages


def _request(text: str, **params) -> Request:
    return Request(messages=to_messages(text), params=Params(**params))


async def test_concurrent_requests_batch_and_match_sequential_answers(tiny_member):
    prompts = ["a", "a much longer prompt than the first", "third one", "4"]
    alone = [tiny_member.generate(_request(p, max_tokens=8 + i)) for i, p in enumerate(prompts)]
    before = len(tiny_member._batcher.batch_sizes)
    together = await asyncio.gather(
        *(tiny_member.agenerate(_request(p, max_tokens=8 + i)) for i, p in enumerate(prompts))
    )
    assert max(tiny_member._batcher.batch_sizes[before:]) > 1
    for a, b in zip(alone, together, strict=True):
        assert b.text == a.text
        assert b.usage == a.usage
        assert [round(t.logprob, 3) for t in b.logprobs] == [round(t.logprob, 3) for t in a.logprobs]


async def test_a_cancelled_request_stops_and_the_others_finish(tiny_member, monkeypatch):
    runs: list[GenerationRun] = []
    submit = tiny_member._batcher.submit
    monkeypatch.setattr(tiny_member._batcher, "submit", lambda run: runs.append(run) or submit(run))
    long = asyncio.ensure_future(tiny_member.agenerate(_request("x", max_tokens=200)))
    short = asyncio.ensure_future(tiny_member.agenerate(_request("y", max_tokens=5)))
    while not any(run.new_ids for run in runs):  # the long request has begun generating
        await asyncio.sleep(0.001)
    long.cancel()
    result = await short
    assert result.usage.output_tokens == 5  # the seeded tiny model writes its whole budget
    try:
        await long
        raise AssertionError("the cancelled request returned")
    except asyncio.CancelledError:
        pass
    # the worker is free again: a new request is served (after the cancelled row's batch has ended)
    assert (await tiny_member.agenerate(_request("z", max_tokens=3))).usage.output_tokens == 3
    cancelled = runs[0]
    assert cancelled.cancelled.is_set()
    assert 0 < len(cancelled.new_ids) < 200  # it stopped at the next token, not at its budget


def test_a_seeded_sampled_request_is_reproducible_alone_or_under_load(tiny_member):
    import threading

    reference = tiny_member.generate(_request("hi", max_tokens=10, temperature=1.0, seed=3)).text
    results: list[str] = []
    threads = [
        threading.Thread(
            target=lambda: results.append(
                tiny_member.generate(_request("hi", max_tokens=10, temperature=1.0, seed=3)).text
            )
        )
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [reference] * 3
