"""`FusedDecodingStrategy`: the plumbing of the strategies that decode with every member in lockstep and
choose each token from their mixed next-token scores (token fusion, contrastive decoding).

A subclass says how each request weighs the members (`request_weights`), how their scores are mixed
(`make_mixer`) and how the trace reads (`describe`); this base opens the members' step sessions through the
request's `RunContext`, decodes rows of requests together, streams the first row, and turns each row into a
`Result`.
"""

from __future__ import annotations

import asyncio
import time
from abc import abstractmethod
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from typing import Any, ClassVar

import torch
from pydantic import Field

from ensemble_core.alignment import Alignment
from ensemble_core.asyncio_bridge import aiterate_blocking, to_thread
from ensemble_core.errors import ConfigError
from ensemble_core.fused_decoding import FusedDecoding, RowOutcome, require_tokenizer
from ensemble_core.members.base import Capability, Member
from ensemble_core.members.step import StepSession
from ensemble_core.members.tool_parsing import ProseStream, parse_answer
from ensemble_core.mixing import Mixer
from ensemble_core.run_context import RunContext
from ensemble_core.strategies.base import Strategy
from ensemble_core.types import Delta, Generation, Request, Result, Usage, tool_calls_to_chunks


class FusedDecodingStrategy(Strategy):
    """Decode with every member in lockstep: per-request weights, a mixer, one shared answer."""

    requires: ClassVar[frozenset[Capability]] = frozenset({Capability.STEP})
    composes_answer: ClassVar[bool] = True

    batch_size: int = Field(default=8, ge=1, description="requests decoded together as rows of one batch")
    trace_tokens: bool = Field(
        default=False, description="record every chosen token and which members agreed with it in the trace"
    )

    def check(self, members: Mapping[str, Member]) -> None:
        super().check(members)
        for member in self.members_used(list(members.values())):
            require_tokenizer(member)

    @abstractmethod
    async def request_weights(
        self, ctxs: Sequence[RunContext], members: Sequence[Member], requests: Sequence[Request]
    ) -> tuple[torch.Tensor, str | None]:
        """[requests, members] weights, rows summing to 1, and a note for the trace (why a fallback was
        taken), or None."""

    @abstractmethod
    def make_mixer(self, alignment: Alignment, members: Sequence[Member]) -> Mixer:
        """How the members' next-token log-probabilities become one score per union token."""

    @abstractmethod
    def describe(self, members: Sequence[Member], weights: list[float]) -> tuple[str, dict[str, Any]]:
        """The trace's reason for one row, and the details particular to the method."""

    # running
    # ----------------------------------------------------------------------------------------------------
    async def arun(self, ctx: RunContext, request: Request) -> Result:
        return (await self.arun_batch([ctx], [request]))[0]

    async def arun_batch(self, ctxs: Sequence[RunContext], requests: Sequence[Request]) -> list[Result]:
        """Answer several requests as rows of fused decodings of at most `batch_size` rows; one context
        each."""
        results: list[Result] = []
        for first in range(0, len(requests), self.batch_size):
            rows = slice(first, first + self.batch_size)
            results.extend(await self._run_rows(ctxs[rows], requests[rows]))
        return results

    async def _run_rows(self, ctxs: Sequence[RunContext], requests: Sequence[Request]) -> list[Result]:
        start = time.perf_counter()
        decoding, note = await self._open(ctxs, requests)
        try:
            outcomes = await to_thread(decoding.run)
        except asyncio.CancelledError:
            decoding.cancelled.set()  # the caller went away: the stepping thread stops at the next token
            raise
        decoding.close()
        latency = time.perf_counter() - start
        return [
            self._result(ctx, request, decoding, row, outcome, latency, note)
            for row, (ctx, request, outcome) in enumerate(zip(ctxs, requests, outcomes, strict=True))
        ]

    async def astream(self, ctx: RunContext, request: Request) -> AsyncIterator[Delta]:
        start = time.perf_counter()
        decoding, note = await self._open([ctx], [request])
        prose = ProseStream() if request.tools else None
        try:
            async for text in aiterate_blocking(_row_texts(decoding)):
                shown = prose.add(text) if prose is not None else text
                if shown:
                    yield Delta(text=shown, member=self.name)
        finally:
            decoding.close()
        outcome = decoding.outcomes[0]
        result = self._result(ctx, request, decoding, 0, outcome, time.perf_counter() - start, note)
        chunks = tool_calls_to_chunks(result.tool_calls)
        rest = prose.finish(result.text) if prose is not None else ""
        if rest or chunks:
            yield Delta(text=rest, tool_call_chunks=chunks, member=self.name)
        yield ctx.final_delta(ctx.trace.chosen or self.name, reason=ctx.trace.reason)

    async def _open(
        self, ctxs: Sequence[RunContext], requests: Sequence[Request]
    ) -> tuple[FusedDecoding, str | None]:
        """The weights of each request and a decoding of them all, ready to step (prompts read, caches
        filled); every member's session is opened through the first request's context, recording each row's
        calls into its own request's context."""
        lead = ctxs[0]
        members = self.members_used(list(lead.members.values()))
        weights, note = await self.request_weights(ctxs, members, requests)

        def open_session(member: Member, prompts: list[str]) -> StepSession:
            return lead.step_session(member, prompts, role="fuse", row_contexts=ctxs)

        def mixer(alignment: Alignment) -> Mixer:
            return self.make_mixer(alignment, members)

        decoding = await to_thread(
            FusedDecoding, members, requests, weights, mixer, self.trace_tokens, open_session
        )
        return decoding, note

    # results
    # ------------------------------------------------------------------------------------------------------
    def _result(
        self,
        ctx: RunContext,
        request: Request,
        decoding: FusedDecoding,
        row: int,
        outcome: RowOutcome,
        latency_s: float,
        weights_note: str | None,
    ) -> Result:
        weights = decoding.weights[row].tolist()
        cut = outcome.finish_reason == "length"
        text, tool_calls, invalid = parse_answer(outcome.text, request, cut=cut)
        finish = "tool_calls" if tool_calls else outcome.finish_reason
        lead = max(
            range(len(weights)), key=lambda i: (decoding.members[i].name not in decoding.errors, weights[i])
        )
        reason, method_details = self.describe(decoding.members, weights)
        details: dict[str, Any] = {
            "weights": {m.name: w for m, w in zip(decoding.members, weights, strict=True)},
            **method_details,
            "tokenizers": "shared"
            if decoding.alignment.shared
            else f"union vocabulary of {decoding.alignment.size}",
            "fused_tokens": outcome.n_tokens,
            "constrained": row in decoding.constraints,
            "agreement": outcome.agreement,
            "dropped": dict(decoding.errors),
            "weights_note": weights_note,
            "timing": {**decoding.timing.as_dict(), "total_s": latency_s},
        }
        if outcome.tokens is not None:
            details["tokens"] = [t.model_dump() for t in outcome.tokens]
        generation = Generation(
            member=decoding.members[lead].name,
            text=text,
            tool_calls=tool_calls,
            invalid_tool_calls=invalid,
            finish_reason=finish,
            usage=Usage(),
        )
        return ctx.result(generation, reason=reason, **details)


def require_known(field: str, named: Iterable[str], known: Sequence[str], role: str) -> None:
    """A `ConfigError` when a parameter (`field`) names members that are not among the `role` members."""
    unknown = sorted(set(named) - set(known))
    if unknown:
        names = ", ".join(map(repr, unknown))
        raise ConfigError(f"{field}: no {role} is named {names}; the {role}s are: {', '.join(known)}")


def _row_texts(decoding: FusedDecoding) -> Iterator[str]:
    """The first row's new text after each step."""
    for deltas in decoding.steps():
        yield deltas[0]
