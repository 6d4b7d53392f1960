"""`RunContext`: the only road from a strategy to a member. Every call (generate, stream, score, a stepping
session) is bounded by the member's timeout, skipped while its circuit is open, and recorded in the trace
whether it succeeds or fails, so strategies only decide and never book-keep."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ensemble_core.asyncio_bridge import aclose
from ensemble_core.cpu_time import cpu_clock
from ensemble_core.errors import AllMembersFailedError, EmptyAnswerError, EnsembleError, MemberError
from ensemble_core.members.base import Member
from ensemble_core.members.breaker import CircuitOpenError
from ensemble_core.members.step import StepSession
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

if TYPE_CHECKING:
    import torch


class RunContext:
    """Per-request state shared by a strategy and the ensemble: the members and the trace being written."""

    def __init__(self, members: Mapping[str, Member], strategy: str):
        self.members = members
        self.trace = Trace(strategy=strategy)
        self._calls: dict[int, tuple[Generation, MemberCall]] = {}

    def member(self, name: str) -> Member:
        return self.members[name]

    # generate -------------------------------------------------------------------------------------------
    async def generate(
        self, member: Member, request: Request, role: str, *, require_answer: bool = False
    ) -> Generation:
        """Call `member.agenerate`, bounded by its timeout; record the call; raise `MemberError` on failure.
        With `require_answer`, an answer with neither text nor tool calls (valid or not) counts as a failure
        (garbage); an invalid tool call is an answer, which the adapters report as such."""
        start = time.perf_counter()
        try:
            member.breaker.check(member.name)
            generation = await asyncio.wait_for(member.agenerate(request), timeout=member.timeout_s)
            answered = generation.text.strip() or generation.tool_calls or generation.invalid_tool_calls
            if require_answer and not answered:
                raise EmptyAnswerError("returned an empty answer")
        except Exception as err:
            raise self._failed(member, role, start, err) from err
        member.breaker.success()
        self._record(member, role, generation, time.perf_counter() - start)
        return generation

    async def try_generate(
        self, member: Member, request: Request, role: str, *, require_answer: bool = False
    ) -> Generation | None:
        """`generate`, but a failing member gives None (the failure is in the trace) instead of raising."""
        try:
            return await self.generate(member, request, role, require_answer=require_answer)
        except MemberError:
            return None

    async def generate_all(
        self,
        members: Sequence[Member],
        requests: Sequence[Request],
        role: str,
        *,
        require_answer: bool = True,
        raise_if_none: bool = True,
    ) -> tuple[list[Generation], dict[str, BaseException]]:
        """Every member answers every request, all concurrently: the answers in member order, and why each
        member that failed failed (also in the trace). With `raise_if_none`, no answer at all raises
        `AllMembersFailedError` naming each member's error."""
        jobs = [(member, request) for member in members for request in requests]
        outcomes = await asyncio.gather(
            *(self.generate(m, r, role=role, require_answer=require_answer) for m, r in jobs),
            return_exceptions=True,
        )
        answers: list[Generation] = []
        errors: dict[str, BaseException] = {}
        for (member, _), outcome in zip(jobs, outcomes, strict=True):
            if isinstance(outcome, MemberError):
                errors.setdefault(member.name, outcome.__cause__ or outcome)
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                answers.append(outcome)
        if raise_if_none and not answers:
            raise AllMembersFailedError(errors)
        return answers, errors

    # stream ---------------------------------------------------------------------------------------------
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
        self._record(member, role, generation, time.perf_counter() - start)

    # score ----------------------------------------------------------------------------------------------
    async def score(
        self, member: Member, pairs: Sequence[tuple[str, str]], role: str
    ) -> list[ContinuationScore]:
        """Call `member.ascore` on (prompt, continuation) pairs, bounded by its timeout; record the call with
        the tokens read (its score is the first pair's sum log-probability); raise `MemberError` on
        failure."""
        start = time.perf_counter()
        try:
            member.breaker.check(member.name)
            scores = await asyncio.wait_for(member.ascore(pairs), timeout=member.timeout_s)
        except Exception as err:
            raise self._failed(member, role, start, err) from err
        member.breaker.success()
        usage = Usage(input_tokens=sum(s.prompt_tokens + s.n_tokens for s in scores))
        cpu = [s.cpu_s for s in scores if s.cpu_s is not None]
        self.trace.calls.append(
            MemberCall(
                member=member.name,
                role=role,
                usage=usage,
                latency_s=time.perf_counter() - start,
                cpu_s=sum(cpu) if cpu else None,
                cost=member.price.cost(usage),
                score=scores[0].sum_logprob if scores else None,
            )
        )
        return scores

    # step -----------------------------------------------------------------------------------------------
    def step_session(
        self,
        member: Member,
        prompts: Sequence[str],
        role: str,
        *,
        row_contexts: Sequence[RunContext] | None = None,
    ) -> RecordedStepSession:
        """Open `member`'s stepping session on `prompts` (blocking: call it from a worker thread), skipped
        while its circuit is open. The session's stepping time is bounded by the member's timeout, and its
        call is recorded when it closes or fails: into this context, or per row into `row_contexts` when
        the rows answer different requests."""
        contexts = list(row_contexts) if row_contexts is not None else [self] * len(prompts)
        return RecordedStepSession(member, prompts, role, contexts)

    # trace ----------------------------------------------------------------------------------------------
    def annotate(self, generation: Generation, **updates: Any) -> None:
        """Add what a strategy learned after a call (a confidence score, say) to that call's trace entry."""
        entry = self._calls.get(id(generation))
        if entry is None:
            raise ValueError("annotate() takes a generation returned by this context's generate()")
        _, call = entry
        updated = MemberCall.model_validate({**call.model_dump(), **updates})
        index = next(i for i, c in enumerate(self.trace.calls) if c is call)
        self.trace.calls[index] = updated
        self._calls[id(generation)] = (generation, updated)

    def _record(self, member: Member, role: str, generation: Generation, latency_s: float) -> MemberCall:
        call = MemberCall(
            member=member.name,
            role=role,
            text=generation.text,
            tool_calls=generation.tool_calls,
            usage=generation.usage,
            latency_s=latency_s,
            cpu_s=generation.cpu_s,
            cost=member.price.cost(generation.usage),
            prompt_format=generation.prompt_format,
            finish_reason=generation.finish_reason,
        )
        self.trace.calls.append(call)
        self._calls[id(generation)] = (generation, call)
        return call

    def _failed(
        self, member: Member, role: str, start: float, err: BaseException, partial: str = ""
    ) -> MemberError:
        judge_failure(member, err)
        return self.record_failure(member, role, time.perf_counter() - start, err, partial)

    def record_failure(
        self, member: Member, role: str, latency_s: float, err: BaseException, partial: str = ""
    ) -> MemberError:
        """Record a failed call in the trace and return the `MemberError` to raise."""
        message = "timed out" if isinstance(err, TimeoutError) else f"{type(err).__name__}: {err}"
        if partial:
            message += f" (after streaming {len(partial)} characters)"
        self.trace.calls.append(
            MemberCall(
                member=member.name, role=role, ok=False, error=message, text=partial, latency_s=latency_s
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
            invalid_tool_calls=generation.invalid_tool_calls,
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


class RecordedStepSession(StepSession):
    """A member's stepping session as a strategy sees it: every step timed against the member's timeout (a
    budget for the whole session), the circuit breaker told how it went, and one call per row recorded
    when the session closes (prompt tokens in; out, the next-token distributions it produced, one per
    answer token, or one per position checked by `advance_positions`); a failure raises `MemberError` and is
    recorded at once."""

    def __init__(self, member: Member, prompts: Sequence[str], role: str, contexts: Sequence[RunContext]):
        self.member = member
        self.role = role
        self.contexts = list(contexts)
        self.elapsed_s = 0.0
        self.cpu_s = 0.0
        self._open = True
        self._guarded(lambda: member.breaker.check(member.name))
        self._session: StepSession = self._guarded(lambda: member.step_session(prompts))
        self.prompt_tokens = [len(self._session.token_ids(row)) for row in range(len(self.contexts))]
        self.steps = [1] * len(self.contexts)  # next-token distributions produced per row

    @property
    def vocab_size(self) -> int:
        return self._session.vocab_size

    def logprobs(self) -> torch.Tensor:
        return self._session.logprobs()

    def token_ids(self, row: int) -> list[int]:
        return self._session.token_ids(row)

    def advance(self, token_ids: Sequence[Sequence[int]]) -> torch.Tensor:
        logprobs = self._guarded(lambda: self._session.advance(token_ids))
        for row, ids in enumerate(token_ids):
            self.steps[row] += bool(ids)
        return logprobs

    @property
    def supports_rewind(self) -> bool:
        return self._session.supports_rewind

    def advance_positions(self, token_ids: Sequence[Sequence[int]]) -> list[torch.Tensor]:
        """`advance`, with the distribution after every fed id (each counts as one produced)."""
        logprobs: list[torch.Tensor] = self._guarded(lambda: self._session.advance_positions(token_ids))
        for row, ids in enumerate(token_ids):
            self.steps[row] += len(ids)
        return logprobs

    def rewind(self, counts: Sequence[int]) -> None:
        self._guarded(lambda: self._session.rewind(counts))

    def narrow(self, token_ids: Sequence[int]) -> None:
        self._session.narrow(token_ids)

    def close(self) -> None:
        """End the session and record each row's call (once)."""
        if not self._open:
            return
        self._open = False
        self.member.breaker.success()
        tokens = [p + n for p, n in zip(self.prompt_tokens, self.steps, strict=True)]
        for row, ctx in enumerate(self.contexts):
            usage = Usage(input_tokens=self.prompt_tokens[row], output_tokens=self.steps[row])
            ctx.trace.calls.append(
                MemberCall(
                    member=self.member.name,
                    role=self.role,
                    usage=usage,
                    latency_s=self.elapsed_s,
                    cpu_s=self.cpu_s * tokens[row] / max(sum(tokens), 1),  # a batch's CPU shared by tokens
                    cost=self.member.price.cost(usage),
                )
            )
        self._session.close()

    def _guarded(self, action: Any) -> Any:
        start, cpu_start = time.perf_counter(), cpu_clock()
        try:
            value = action()
        except Exception as err:
            self._fail(err, time.perf_counter() - start)
        self.elapsed_s += time.perf_counter() - start
        self.cpu_s += cpu_clock() - cpu_start
        timeout = self.member.timeout_s
        if timeout is not None and self.elapsed_s > timeout:
            self._fail(TimeoutError(f"stepping took over {timeout} s"), 0.0)
        return value

    def _fail(self, err: BaseException, spent_s: float) -> None:
        self.elapsed_s += spent_s
        was_open, self._open = self._open, False
        session = getattr(self, "_session", None)
        if session is not None:
            session.close()
        if not was_open:
            raise MemberError(self.member.name, f"{type(err).__name__}: {err}") from err
        judge_failure(self.member, err)
        errors = [ctx.record_failure(self.member, self.role, self.elapsed_s, err) for ctx in self.contexts]
        raise errors[0] from err


def judge_failure(member: Member, err: BaseException) -> None:
    """Tell the member's circuit breaker about a failed call: a member or transport fault counts against it,
    a request the member could not take does not."""
    if _counts_against_member(err):
        member.breaker.failure()
    else:
        member.breaker.release()


def _counts_against_member(err: BaseException) -> bool:
    """Crashes and timeouts count toward a member's circuit breaker; errors in the request (a prompt over the
    context window, a missing capability) and an already-open circuit do not."""
    return not isinstance(err, EnsembleError) or isinstance(err, MemberError)
