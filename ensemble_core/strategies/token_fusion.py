"""`TokenFusion`: mix the members' next-token distributions at every step (PackLLM, GaC).

Every member steps on its own KV cache; the distributions are mixed with weights (uniform, fixed, or PackLLM's
prompt-perplexity weights), one token is chosen and every member reads it in its own ids. Members with
different tokenizers meet in a union vocabulary (`ensemble_core.alignment`). Several requests fuse together as
rows of one batch (`arun_batch`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, field_validator

from ensemble_core.asyncio_bridge import aiterate_blocking, to_thread
from ensemble_core.errors import ConfigError
from ensemble_core.fused_decoding import FusedDecoding, RowOutcome, member_alignment, require_tokenizer
from ensemble_core.members.base import Capability, Member
from ensemble_core.members.step import StepSession
from ensemble_core.members.tool_parsing import ProseStream, parse_answer
from ensemble_core.mixing import Mixer, Mixing
from ensemble_core.run_context import RunContext
from ensemble_core.scoring.packllm import FusedPromptPerplexity, opt_weights, sim_weights
from ensemble_core.scoring.perplexity import prompt_perplexities
from ensemble_core.strategies.base import Strategy
from ensemble_core.types import Delta, Generation, Request, Result, Usage, tool_calls_to_chunks

WeightMethod = Literal["uniform", "packllm-sim", "packllm-opt"]


class TokenFusion(Strategy):
    """Fuse the members token by token: mixed next-token distributions, one shared answer."""

    name: ClassVar[str] = "token-fusion"
    summary: ClassVar[str] = (
        "mix the members' next-token distributions at every step (same or different tokenizers)"
    )
    paper: ClassVar[str | None] = (
        "Mavromatis et al. 2024, Pack of LLMs: Model Fusion at Test-Time via Perplexity Optimization "
        "(PackLLM); "
        "Yu et al. 2024, Breaking the Ceiling of the LLM Community by Treating Token Generation as a "
        "Classification for Ensembling (GaC)"
    )
    requires: ClassVar[frozenset[Capability]] = frozenset({Capability.STEP})
    members_doc: ClassVar[str] = "names of the members to fuse; default: all"
    composes_answer: ClassVar[bool] = True

    weights: WeightMethod | dict[str, float] = Field(
        default="uniform",
        description="'uniform', {member: weight} (normalised; unnamed members get 0), 'packllm-sim' "
        "(softmax(-log perplexity of the prompt / tau), per request) or 'packllm-opt' (greedy search for the "
        "weights that minimise the fused perplexity of the prompt, per request)",
    )
    mixing: Mixing = Field(
        default="prob",
        description="'prob': mix probabilities (mixture); 'logit': mix log-probabilities (product, PackLLM's "
        "choice)",
    )
    tau: float = Field(
        default=0.1,
        gt=0,
        description="packllm-sim temperature: lower favours the least surprised member more",
    )
    opt_grid: int = Field(
        default=11, ge=2, description="packllm-opt: grid points for each member's share in [0, 1]"
    )
    batch_size: int = Field(default=8, ge=1, description="requests decoded together as rows of one batch")
    trace_tokens: bool = Field(
        default=False, description="record every chosen token and which members agreed with it in the trace"
    )

    @field_validator("weights")
    @classmethod
    def _valid_weights(cls, weights: WeightMethod | dict[str, float]) -> WeightMethod | dict[str, float]:
        if isinstance(weights, dict):
            if any(w < 0 for w in weights.values()):
                raise ValueError("fixed weights must be >= 0")
            if not sum(weights.values()) > 0:
                raise ValueError("fixed weights must not all be 0")
        return weights

    def check(self, members: Mapping[str, Member]) -> None:
        super().check(members)
        for member in self.members_used(list(members.values())):
            require_tokenizer(member)
        if isinstance(self.weights, dict):
            used = [m.name for m in self.members_used(list(members.values()))]
            unknown = sorted(set(self.weights) - set(used))
            if unknown:
                raise ConfigError(
                    f"token-fusion.weights: no fused member is named {', '.join(map(repr, unknown))}; the "
                    f"fused members are: {', '.join(used)}"
                )

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

        decoding = await to_thread(
            FusedDecoding, members, requests, weights, self.mixing, self.trace_tokens, open_session
        )
        return decoding, note

    # weights
    # ------------------------------------------------------------------------------------------------------
    async def request_weights(
        self, ctxs: Sequence[RunContext], members: Sequence[Member], requests: Sequence[Request]
    ) -> tuple[torch.Tensor, str | None]:
        """[requests, members] weights, each row summing to 1, by the configured method; if PackLLM's scoring
        fails, uniform weights and a note saying why (the trace keeps it)."""
        n = len(members)
        uniform = torch.full((len(requests), n), 1.0 / n)
        if self.weights == "uniform":
            return uniform, None
        if isinstance(self.weights, dict):
            fixed = torch.tensor([float(self.weights.get(m.name, 0.0)) for m in members])
            return (fixed / fixed.sum()).expand(len(requests), n).clone(), None
        texts = [prompt_text(r) for r in requests]
        try:
            if self.weights == "packllm-sim":
                found = await asyncio.gather(
                    *(
                        prompt_perplexities(ctx, members, [text], role="weigh")
                        for ctx, text in zip(ctxs, texts, strict=True)
                    )
                )
                rows = [sim_weights([ppl[m.name][0] for m in members], self.tau) for ppl in found]
            else:
                mixer = Mixer(member_alignment(members), self.mixing)

                def weigh(ctx: RunContext, text: str) -> list[float]:
                    objective = FusedPromptPerplexity(
                        members, mixer, text, lambda m, p: ctx.step_session(m, p, role="weigh")
                    )
                    return opt_weights(objective, n, self.opt_grid)

                rows = [await to_thread(weigh, ctx, text) for ctx, text in zip(ctxs, texts, strict=True)]
        except Exception as err:
            return (
                uniform,
                f"{self.weights} weights failed ({type(err).__name__}: {err}); used uniform weights",
            )
        return torch.tensor(rows, dtype=torch.float32), None

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
        method = self.weights if isinstance(self.weights, str) else "fixed"
        details: dict[str, Any] = {
            "weights": {m.name: w for m, w in zip(decoding.members, weights, strict=True)},
            "weight_method": method,
            "mixing": self.mixing,
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
        names = ", ".join(f"{m.name} {w:.2f}" for m, w in zip(decoding.members, weights, strict=True))
        return ctx.result(
            generation, reason=f"token fusion ({method} weights, {self.mixing} mixing: {names})", **details
        )


def prompt_text(request: Request) -> str:
    """The text PackLLM weighs members on: the conversation's message contents, in order."""
    return "\n".join(m.content for m in request.messages if m.content)


def _row_texts(decoding: FusedDecoding) -> Iterator[str]:
    """The first row's new text after each step."""
    for deltas in decoding.steps():
        yield deltas[0]
