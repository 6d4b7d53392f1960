"""`Speculative`: a small member drafts, a large one verifies several drafted tokens in one forward pass, so
the large member's answer comes faster without changing a token (greedy) or its distribution (sampled).

The loop is `ensemble_core.speculative_decoding`; this module names the two members, runs and streams it
through `RunContext` (both step sessions bounded and recorded), and writes the trace: drafted and accepted
tokens, verifier passes, where the time went. Each request is one row of one session per member.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from ensemble_core.asyncio_bridge import aiterate_blocking, to_thread
from ensemble_core.errors import AllMembersFailedError, ConfigError, EnsembleError, MemberError
from ensemble_core.members.base import Capability, Member
from ensemble_core.members.step import StepSession
from ensemble_core.members.tool_parsing import parse_tool_calls
from ensemble_core.run_context import RunContext
from ensemble_core.speculative_decoding import DraftSchedule, SpeculativeDecoding
from ensemble_core.strategies.base import Strategy, resolve_member
from ensemble_core.types import Delta, Generation, Request, Result, Usage, tool_calls_to_chunks


class Speculative(Strategy):
    """The verifier's answer, drafted by a smaller member that shares (or can be aligned with) its
    tokenizer. Greedy: the verifier's own tokens (exactly in float32; in bfloat16 a near-tie of its two best
    tokens can go the other way, see `speculative_decoding`); sampled: distributed as the verifier's. A
    failing drafter leaves the verifier to answer alone, and a failing verifier the drafter."""

    name: ClassVar[str] = "speculative"
    summary: ClassVar[str] = (
        "a small member drafts, the large one checks several tokens per pass: its own answer, faster"
    )
    paper: ClassVar[str | None] = (
        "Leviathan et al. 2023, Fast Inference from Transformers via Speculative Decoding; "
        "Chen et al. 2023, Accelerating Large Language Model Decoding with Speculative Sampling"
    )
    requires: ClassVar[frozenset[Capability]] = frozenset({Capability.STEP})
    members_doc: ClassVar[str] = (
        "[drafter, verifier] as two names (or name them with `drafter` and `verifier`); default: the first "
        "member drafts for the last"
    )

    drafter: str | None = Field(default=None, description="the member that drafts (small, fast)")
    verifier: str | None = Field(
        default=None, description="the member whose answer it is (large); it checks every drafted token"
    )
    draft_tokens: int | Literal["adaptive"] = Field(
        default="adaptive",
        description="tokens drafted per round, or 'adaptive': from 4, +2 after a round whose drafts were all "
        "kept, -1 after a rejection, at most `max_draft_tokens`, and a draft stops early at a token the "
        "drafter gives under `min_confidence`",
    )
    max_draft_tokens: int = Field(default=8, ge=1, le=64, description="adaptive: the longest draft")
    min_confidence: float = Field(
        default=0.7,
        ge=0.0,
        le=1.0,
        description="adaptive: stop a draft at a token the drafter gives a lower probability",
    )

    draft_vocab: int | None = Field(
        default=32768,
        ge=256,
        description="the drafter proposes only its first N token ids (BPE and sentencepiece vocabularies "
        "number tokens roughly by frequency) and its end of sequence, so its output layer shrinks (a quarter "
        "of a 0.5B model's work over a 152k vocabulary); None: the whole vocabulary. Exact either way: the "
        "verifier checks every token",
    )

    @field_validator("draft_tokens")
    @classmethod
    def _positive(cls, value: int | Literal["adaptive"]) -> int | Literal["adaptive"]:
        if isinstance(value, int) and not 1 <= value <= 64:
            raise ValueError("draft_tokens must be 'adaptive' or 1 to 64")
        return value

    @model_validator(mode="after")
    def _one_way_to_name_them(self) -> Speculative:
        if self.members is not None:
            if len(self.members) != 2:
                raise ValueError("speculative.members names two members: [drafter, verifier]")
            if self.drafter is not None or self.verifier is not None:
                raise ValueError("give members=[drafter, verifier] or drafter=/verifier=, not both")
        return self

    def default_participants(self, members: Sequence[Member]) -> list[Member]:
        """The named drafter and verifier; a role not named: the first member drafts, the last verifies."""
        if not members:
            return []
        drafter = resolve_member(members, self.drafter, "speculative.drafter") if self.drafter else members[0]
        verifier = (
            resolve_member(members, self.verifier, "speculative.verifier") if self.verifier else members[-1]
        )
        return [drafter, verifier]

    def pair(self, members: Sequence[Member]) -> tuple[Member, Member]:
        """(drafter, verifier)."""
        drafter, verifier = self.participants(members)
        return drafter, verifier

    def check(self, members: Mapping[str, Member]) -> None:
        super().check(members)
        drafter, verifier = self.pair(list(members.values()))
        if drafter is verifier:
            raise ConfigError(
                f"speculative: {drafter.name!r} cannot draft for itself; name a smaller member as the "
                "drafter (drafter=..., verifier=...)"
            )
        for member in (drafter, verifier):
            if not (hasattr(type(member), "tokenizer") and hasattr(type(member), "eos_ids")):
                raise ConfigError(
                    f"speculative: member {member.name!r} ({type(member).__name__}) exposes no tokenizer, "
                    "which speculative decoding needs to read drafted tokens; use an HFMember"
                )

    def schedule(self) -> DraftSchedule:
        fixed = self.draft_tokens if isinstance(self.draft_tokens, int) else None
        return DraftSchedule(fixed=fixed, maximum=self.max_draft_tokens, min_confidence=self.min_confidence)

    # running
    # ----------------------------------------------------------------------------------------------------
    async def arun(self, ctx: RunContext, request: Request) -> Result:
        drafter, verifier = self.pair(list(ctx.members.values()))
        try:
            if _constrained(verifier, request):
                generation = await ctx.generate(verifier, request, role="answer")
                return ctx.result(generation, reason=_alone(verifier), constrained=True)
            return await self._speculate(ctx, request)
        except MemberError as failure:  # the verifier failed (a request error is raised as itself)
            err = _request_error(failure)
            if err is not failure:
                raise err from None
            try:
                generation = await ctx.generate(drafter, request, role="answer", require_answer=True)
            except MemberError as second:
                raise AllMembersFailedError({verifier.name: failure, drafter.name: second}) from None
            return ctx.result(generation, reason=_verifier_failed(verifier, drafter))

    async def _speculate(self, ctx: RunContext, request: Request) -> Result:
        start = time.perf_counter()
        decoding = await self._open(ctx, request)
        try:
            await to_thread(decoding.run)
        except asyncio.CancelledError:
            decoding.cancelled.set()  # the caller went away: the stepping thread stops after this round
            raise
        finally:
            decoding.close()
        return self._result(ctx, decoding, time.perf_counter() - start)

    async def astream(self, ctx: RunContext, request: Request) -> AsyncIterator[Delta]:
        drafter, verifier = self.pair(list(ctx.members.values()))
        started = False
        try:
            async for delta in self._stream(ctx, request, verifier):
                started = started or bool(delta.text or delta.tool_call_chunks)
                yield delta
        except MemberError as failure:
            err = _request_error(failure)
            if err is not failure:
                raise err from None
            if started:  # text already sent cannot be taken back
                raise
            async for delta in ctx.stream(drafter, request, role="answer", require_answer=True):
                yield delta
            yield ctx.final_delta(drafter.name, reason=_verifier_failed(verifier, drafter))

    async def _stream(self, ctx: RunContext, request: Request, verifier: Member) -> AsyncIterator[Delta]:
        if _constrained(verifier, request):
            async for delta in ctx.stream(verifier, request, role="answer"):
                yield delta
            yield ctx.final_delta(verifier.name, reason=_alone(verifier))
            return
        start = time.perf_counter()
        decoding = await self._open(ctx, request)
        buffer = bool(request.tools)
        try:
            async for text in aiterate_blocking(decoding.steps()):
                if text and not buffer:
                    yield Delta(text=text, member=decoding.verifier.name)
        finally:
            decoding.close()
        result = self._result(ctx, decoding, time.perf_counter() - start)
        chunks = tool_calls_to_chunks(result.tool_calls)
        if buffer and (result.text or chunks):
            yield Delta(text=result.text, tool_call_chunks=chunks, member=decoding.verifier.name)
        yield ctx.final_delta(decoding.verifier.name, ctx.trace.reason, finish_reason=result.finish_reason)

    async def _open(self, ctx: RunContext, request: Request) -> SpeculativeDecoding:
        """Both sessions opened (prompts read), ready to draft."""
        drafter, verifier = self.pair(list(ctx.members.values()))

        def open_session(member: Member, prompt: str, role: str) -> StepSession:
            return ctx.step_session(member, [prompt], role=role)

        return await to_thread(
            SpeculativeDecoding, drafter, verifier, request, self.schedule(), open_session, self.draft_vocab
        )

    def _result(self, ctx: RunContext, decoding: SpeculativeDecoding, latency_s: float) -> Result:
        outcome = decoding.outcome
        text, tool_calls = parse_tool_calls(outcome.text, decoding.request.tools)
        verifier, drafter = decoding.verifier.name, decoding.drafter_member.name
        passes = max(outcome.rounds, 1)
        details: dict[str, Any] = {
            "drafter": drafter,
            "verifier": verifier,
            "draft_tokens": self.draft_tokens,
            "tokenizers": "shared"
            if decoding.alignment.shared
            else f"union vocabulary of {decoding.alignment.size}",
            "tokens": outcome.n_tokens,
            "drafted": outcome.drafted,
            "accepted": outcome.accepted,
            "acceptance_rate": outcome.accepted / outcome.drafted if outcome.drafted else None,
            "verifier_passes": outcome.rounds,
            "tokens_per_pass": outcome.n_tokens / passes,
            "drafter_error": outcome.drafter_error,
            "timing": {"draft_s": outcome.draft_s, "verify_s": outcome.verify_s, "total_s": latency_s},
        }
        generation = Generation(
            member=verifier,
            text=text,
            tool_calls=tool_calls,
            finish_reason="tool_calls" if tool_calls else outcome.finish_reason,
            usage=Usage(),
        )
        rate = "no drafts" if not outcome.drafted else f"{outcome.accepted}/{outcome.drafted} drafted kept"
        reason = f"speculative: {drafter} drafts, {verifier} verifies ({rate})"
        return ctx.result(generation, reason=reason, **details)


def _constrained(verifier: Member, request: Request) -> bool:
    """Whether the verifier would keep its answer to a grammar (a tool call, a JSON schema): drafts are not
    checked against a grammar, so such a request is the verifier's alone."""
    if not (request.tools or request.response_format):
        return False
    make = getattr(verifier, "constraint", None)
    return make is not None and make(request) is not None


def _alone(verifier: Member) -> str:
    return f"speculative: {verifier.name} answers alone under its grammar (drafts are not grammar-checked)"


def _verifier_failed(verifier: Member, drafter: Member) -> str:
    return f"speculative: the verifier {verifier.name} failed, so the drafter {drafter.name} answered alone"


def _request_error(err: MemberError) -> EnsembleError:
    """A request the verifier could not take (a prompt over its context window) stays that error."""
    return err.__cause__ if isinstance(err.__cause__, EnsembleError) else err
