"""The round engine that span and step fusion share (`ProposalFusion`): every member continues the answer so
far, each continuation is cut to one piece, one piece is chosen and appended, until the answer ends.

Works through the generate and score APIs only (no shared vocabulary, no KV cache access), so any members that
can continue a partly written answer (`Request.prefill`) can take part, local or remote.
"""

from __future__ import annotations

from abc import abstractmethod
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ensemble_core.members.text_stream import TextAssembler
from ensemble_core.run_context import RunContext
from ensemble_core.strategies.base import Strategy
from ensemble_core.types import Delta, FinishReason, Generation, Request, Result, tool_calls_to_chunks


@dataclass
class Proposal:
    """One member's candidate piece: the text cut at a boundary, and whether the member's answer ends
    there."""

    member: str
    text: str
    complete: bool
    tokens: int


@dataclass
class Choice:
    """The index of the winning candidate and what the trace should say about the choice."""

    index: int
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Answer:
    """The answer being fused: accepted pieces, who proposed each, tokens spent, and how it ended."""

    pieces: list[str] = field(default_factory=list)
    winners: list[str] = field(default_factory=list)
    tokens: int = 0
    text: str = ""
    finish_reason: FinishReason = "stop"
    tool_call: Generation | None = None
    rounds: list[dict[str, Any]] = field(default_factory=list)

    @property
    def chosen(self) -> str | None:
        """The member whose pieces were kept most often (the first to win, on a tie)."""
        return Counter(self.winners).most_common(1)[0][0] if self.winners else None


class ProposalFusion(Strategy):
    """Rounds of: every member continues the answer so far; each continuation is cut to one piece; one piece
    is chosen and appended. Subclasses say how to cut (`cut`), join (`join`, `prefix`), choose (`choose`) and
    when an accepted piece ends the answer (`ends`).

    Members continue through `Request.prefill`; one whose backend ignores it and starts over has the repeated
    text removed (`without_restart`). A member with nothing more to say (an empty proposal: EOS or a stop
    string) yields to those that go on; the answer ends when every member ends, or when the chosen piece ends
    its proposer's answer. Members that fail are left out of the round (the trace says so); a round where all
    fail raises.

    With tools, the first round asks for whole answers so no tool call is cut, and the first member (in order)
    that proposes a tool call answers with it, intact; otherwise fusion goes on from the text proposals.
    """

    piece: ClassVar[str] = "piece"
    composes_answer: ClassVar[bool] = True

    members_doc: ClassVar[str] = (
        "names of the members that propose (and, scoring by perplexity, score) pieces; default: all"
    )

    # what a subclass decides --------------------------------------------------------------------------------
    @property
    @abstractmethod
    def proposal_tokens(self) -> int:
        """The most new tokens a member writes for one proposal."""

    @property
    def max_rounds(self) -> int | None:
        """A bound on the number of pieces, besides the request's max_tokens (None: only max_tokens)."""
        return None

    @abstractmethod
    def cut(self, text: str, finished: bool, at_start: bool) -> tuple[str, bool]:
        """(piece, complete) from a member's continuation; `finished` says the member stopped on its own."""

    def prepare(self, request: Request) -> Request:
        """The request as members see it (a strategy may add a system hint, for instance)."""
        return request

    def prefix(self, pieces: Sequence[str]) -> str:
        """The answer so far, as members are asked to continue it."""
        return "".join(pieces)

    def join(self, pieces: Sequence[str], piece: str) -> str:
        """How an accepted piece is appended to the text (a separator, for instance)."""
        return piece

    def ends(self, proposal: Proposal) -> bool:
        """Whether an accepted piece ends the answer, besides EOS, stop strings and the budget."""
        return False

    @abstractmethod
    async def choose(
        self, ctx: RunContext, request: Request, prefix: str, pieces: Sequence[str], candidates: Sequence[str]
    ) -> Choice:
        """Pick one of two or more distinct candidates for the next piece; `prefix` is the whole answer so far
        as members continue it (the request's own prefill included), `pieces` the accepted pieces."""

    # the rounds ---------------------------------------------------------------------------------------------
    async def arun(self, ctx: RunContext, request: Request) -> Result:
        answer = _Answer()
        async for _ in self._fuse(ctx, request, answer):
            pass
        if answer.tool_call is not None:
            return ctx.result(answer.tool_call, **self._summary(answer))
        generation = Generation(
            member=answer.chosen or "", text=answer.text, finish_reason=answer.finish_reason
        )
        return ctx.result(generation, **self._summary(answer))

    async def astream(self, ctx: RunContext, request: Request) -> AsyncIterator[Delta]:
        answer = _Answer()
        async for text, member in self._fuse(ctx, request, answer):
            yield Delta(text=text, member=member)
        if answer.tool_call is not None:
            call = answer.tool_call
            yield Delta(
                text=call.text, tool_call_chunks=tool_calls_to_chunks(call.tool_calls), member=call.member
            )
            yield ctx.final_delta(call.member, finish_reason="tool_calls", **self._summary(answer))
            return
        yield ctx.final_delta(
            answer.chosen or "", finish_reason=answer.finish_reason, **self._summary(answer)
        )

    async def _fuse(
        self, ctx: RunContext, request: Request, answer: _Answer
    ) -> AsyncIterator[tuple[str, str]]:
        """Run the rounds, yielding (text, member) as each piece is accepted; fills in `answer`."""
        request = self.prepare(request)
        members = self.participants(list(ctx.members.values()))
        assembler = TextAssembler(lambda ids: "".join(answer.pieces[i] for i in ids), request.params.stop)
        answer.finish_reason = "length"
        while self.max_rounds is None or len(answer.rounds) < self.max_rounds:
            remaining = request.params.max_tokens - answer.tokens
            if remaining <= 0:
                break
            first = not answer.rounds
            budget = remaining if first and request.tools else min(self.proposal_tokens, remaining)
            prefix = request.prefill + self.prefix(answer.pieces)
            asked = request.with_prefill(prefix).with_params(max_tokens=budget)
            generations, errors = await ctx.generate_all(
                members, [asked], role=f"propose {self.piece}", require_answer=False
            )
            failed = list(errors)
            if first and request.tools:
                answer.tool_call = next((g for g in generations if g.tool_calls), None)
                if answer.tool_call is not None:
                    answer.finish_reason = "tool_calls"
                    return
            proposals = [self._proposal(g, prefix, at_start=first) for g in generations]
            record: dict[str, Any] = {"proposals": {p.member: p.text for p in proposals}, "failed": failed}
            answer.rounds.append(record)
            live = [p for p in proposals if p.text.strip()]
            if not live:  # every member that answered ends the answer here
                answer.finish_reason = "stop"
                break
            candidates = list(dict.fromkeys(p.text for p in live))
            if len(candidates) == 1:
                choice = Choice(0, {"agreed": True})
            else:
                choice = await self.choose(ctx, request, prefix, answer.pieces, candidates)
            winner = next(p for p in live if p.text == candidates[choice.index])
            record.update(candidates=candidates, **choice.details, winner=winner.member, text=winner.text)
            answer.pieces.append(self.join(answer.pieces, winner.text))
            answer.winners.append(winner.member)
            answer.tokens += winner.tokens
            if delta := assembler.add(len(answer.pieces) - 1):
                yield delta, winner.member
            if assembler.stopped or winner.complete or self.ends(winner):
                answer.finish_reason = "stop"
                break
        if tail := assembler.finish():
            yield tail, answer.winners[-1]
        answer.text = assembler.text

    def _proposal(self, generation: Generation, prefix: str, at_start: bool) -> Proposal:
        finished = generation.finish_reason == "stop"
        written = without_restart(prefix, generation.text)
        text, complete = self.cut(written, finished, at_start)
        share = len(text) / len(generation.text) if generation.text else 0.0
        tokens = max(1, round(generation.usage.output_tokens * share)) if text else 0
        return Proposal(member=generation.member, text=text, complete=complete, tokens=tokens)

    def _summary(self, answer: _Answer) -> dict[str, Any]:
        if answer.tool_call is not None:
            reason = f"{answer.tool_call.member!r} proposed a tool call; it is returned intact"
        else:
            reason = (
                f"{len(answer.pieces)} {self.piece}s fused; kept per member: {dict(Counter(answer.winners))}"
            )
        return {"reason": reason, "rounds": answer.rounds, "wins": dict(Counter(answer.winners))}


def without_restart(prefix: str, text: str) -> str:
    """A member whose backend ignores the prefill (a chat API that starts a new assistant turn) writes the
    answer again from the beginning; what follows its repetition of the answer so far is its continuation."""
    written = prefix.strip()
    start = text.lstrip()
    return start[len(written) :] if written and start.startswith(written) else text
