"""`RunContext`: how a strategy calls members. Every call is timed, costed, bounded by the member's timeout
and recorded in the trace, whether it succeeds or fails, so strategies only decide and never book-keep."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from ensemble_core.asyncio_bridge import aclose
from ensemble_core.errors import EmptyAnswerError, EnsembleError, MemberError
from ensemble_core.members.base import Member
from ensemble_core.members.breaker import CircuitOpenError
from ensemble_core.types import (
    ContinuationScore,
    Delta,
    FinishReason,
    Generation,
    MemberCall,
    Request,
    Result,
    ToolCallChunk,
    Trace,
    Usage,
    merge_tool_call_chunks,
)


class RunContext:
    """Per-request state shared by a strategy and the ensemble: the members and the trace being written."""

    def __init__(self, members: Mapping[str, Member], strategy: str):
        self.members = members
        self.trace = Trace(strategy=strategy)

    def member(self, name: str) -> Member:
        return self.members[name]

    async def generate(
        self, member: Member, request: Request, role: str, *, require_answer: bool = False
    ) -> Generation:
        """Call `member.agenerate`, bounded by its timeout; record the call; raise `MemberError` on failure.
        With `require_answer`, an answer with neither text nor tool calls counts as a failure (garbage)."""
        start = time.perf_counter()
        try:
            member.breaker.check(member.name)
            generation = await asyncio.wait_for(member.agenerate(request), timeout=member.timeout_s)
            if require_answer and not (generation.text.strip() or generation.tool_calls):
                raise EmptyAnswerError("returned an empty answer")
        except Exception as err:
            raise self._failed(member, role, start, err) from err
        member.breaker.success()
        self.record(member, role, generation, time.perf_counter() - start)
        return generation

    async def try_generate(
        self, member: Member, request: Request, role: str, *, require_answer: bool = False
    ) -> Generation | None:
        """`generate`, but a failing member gives None (the failure is in the trace) instead of raising."""
        try:
            return await self.generate(member, request, role, require_answer=require_answer)
        except MemberError:
            return None

    async def score(
        self, member: Member, pairs: Sequence[tuple[str, str]], role: str
    ) -> list[ContinuationScore]:
        """Call `member.ascore` (prompt, continuation) pairs, bounded by its timeout; record the call (its
        score is the first pair's sum log-probability); raise `MemberError` on failure."""
        start = time.perf_counter()
        try:
            member.breaker.check(member.name)
            scores = await asyncio.wait_for(member.ascore(pairs), timeout=member.timeout_s)
        except Exception as err:
            raise self._failed(member, role, start, err) from err
        member.breaker.success()
        self.trace.calls.append(
            MemberCall(
                member=member.name,
                role=role,
                latency_s=time.perf_counter() - start,
                score=scores[0].sum_logprob if scores else None,
            )
        )
        return scores

    async def stream(
        self, member: Member, request: Request, role: str, *, require_answer: bool = False
    ) -> AsyncIterator[Delta]:
        """Stream a member's non-final deltas and record the whole call when it ends; failures raise
        `MemberError` (and are recorded), with `partial` in the trace saying how much had been streamed."""
        start = time.perf_counter()
        text: list[str] = []
        chunks: list[ToolCallChunk] = []
        final: Delta | None = None
        try:
            member.breaker.check(member.name)
        except CircuitOpenError as err:
            raise self._failed(member, role, start, err) from err
        stream = member.astream(request)
        try:
            while True:
                try:
                    delta = await asyncio.wait_for(anext(stream), timeout=member.timeout_s)
                except StopAsyncIteration:
                    break
                if delta.final:
                    final = delta
                    continue
                text.append(delta.text)
                chunks.extend(delta.tool_call_chunks)
                yield delta
            if require_answer and not ("".join(text).strip() or chunks):
                raise EmptyAnswerError("returned an empty answer")
        except Exception as err:
            raise self._failed(member, role, start, err, partial="".join(text)) from err
        finally:
            await aclose(stream)
        member.breaker.success()
        generation = Generation(
            member=member.name,
            text="".join(text),
            tool_calls=merge_tool_call_chunks(chunks),
            usage=final.usage if final and final.usage else Usage(),
            finish_reason=final.finish_reason if final and final.finish_reason else "stop",
        )
        self.record(member, role, generation, time.perf_counter() - start)

    def record(
        self, member: Member, role: str, generation: Generation, latency_s: float, score: float | None = None
    ) -> MemberCall:
        call = MemberCall(
            member=member.name,
            role=role,
            text=generation.text,
            tool_calls=generation.tool_calls,
            usage=generation.usage,
            latency_s=latency_s,
            cost=member.price.cost(generation.usage),
            prompt_format=generation.prompt_format,
            finish_reason=generation.finish_reason,
            score=score,
        )
        self.trace.calls.append(call)
        return call

    def _failed(
        self, member: Member, role: str, start: float, err: BaseException, partial: str = ""
    ) -> MemberError:
        message = "timed out" if isinstance(err, TimeoutError) else f"{type(err).__name__}: {err}"
        if _counts_against_member(err):
            member.breaker.failure()
        else:
            member.breaker.release()
        if partial:
            message += f" (after streaming {len(partial)} characters)"
        self.trace.calls.append(
            MemberCall(
                member=member.name,
                role=role,
                ok=False,
                error=message,
                text=partial,
                latency_s=time.perf_counter() - start,
            )
        )
        return MemberError(member.name, message)

    def result(self, generation: Generation, reason: str, **details: Any) -> Result:
        """The ensemble's result from the chosen generation; usage is summed over every recorded call."""
        self.trace.chosen = generation.member
        self.trace.reason = reason
        self.trace.details.update(details)
        return Result(
            text=generation.text,
            tool_calls=generation.tool_calls,
            logprobs=generation.logprobs,
            usage=self.trace.usage,
            finish_reason=generation.finish_reason,
            trace=self.trace,
        )

    def final_delta(
        self, chosen: str, reason: str, finish_reason: FinishReason | None = None, **details: Any
    ) -> Delta:
        """The last delta of a stream: usage summed over every call, and the trace; the finish reason, unless
        given, is that of the chosen member's last successful call."""
        finish_reason = finish_reason or next(
            (
                c.finish_reason
                for c in reversed(self.trace.calls)
                if c.member == chosen and c.ok and c.finish_reason
            ),
            "stop",
        )
        self.trace.chosen = chosen
        self.trace.reason = reason
        self.trace.details.update(details)
        return Delta(
            final=True, finish_reason=finish_reason, usage=self.trace.usage, trace=self.trace, member=chosen
        )


def _counts_against_member(err: BaseException) -> bool:
    """Crashes and timeouts count toward a member's circuit breaker; errors in the request (a prompt over the
    context window, a missing capability) and an already-open circuit do not."""
    return not isinstance(err, EnsembleError) or isinstance(err, MemberError)
