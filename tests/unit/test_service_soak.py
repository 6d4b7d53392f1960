"""A short soak of `llm-ensemble serve` (benchmarks/soak.py, at a tenth of its size): a real server process,
a quarter of the requests malformed, many at a time; every good request gets its own answer, none a 5xx,
memory stays bounded, and no circuit is open at the end."""

from __future__ import annotations

import asyncio

from benchmarks.soak import MAX_GROWTH_MB, server_process, soak


def test_a_short_soak_answers_every_good_request_and_no_5xx():
    with server_process() as (root, pid):
        report = asyncio.run(soak(root, pid, n=200, concurrency=20, malformed_share=0.25))
    assert report.malformed > 30 and report.good_answered == report.requests - report.malformed
    assert report.good_wrong == [] and report.malformed_unexpected == [] and report.server_errors == 0
    assert set(report.statuses) <= {200, 400, 401, 404, 413}
    assert report.growth_mb < MAX_GROWTH_MB and set(report.breakers.values()) == {"closed"}
    assert report.passed
