"""`StepFusion` (process-level ensemble): for reasoning, members propose the next step of one solution; a
scorer picks one; all members continue from it, until a step gives the final answer.

The scorer is the members' perplexity (default), a member as judge (its probability of "Yes" when asked
whether the step is correct), or your own verifier `(request, steps_so_far, candidate) -> float`, higher is
better.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import ClassVar, Literal

from pydantic import Field

from ensemble_core.asyncio_bridge import to_thread
from ensemble_core.errors import AllMembersFailedError, MemberError
from ensemble_core.members.base import Capability, Member
from ensemble_core.run_context import RunContext
from ensemble_core.scoring.continuations import score_candidates
from ensemble_core.scoring.judges import option_probabilities
from ensemble_core.scoring.prompts import step_judge_prompt
from ensemble_core.strategies.base import resolve_member
from ensemble_core.strategies.proposal import Choice, Proposal, ProposalFusion
from ensemble_core.types import Message, Request

Verifier = Callable[[Request, list[str], str], float | Awaitable[float]]

MATH_HINT = (
    "Solve the problem step by step. Write each step on its own line. "
    "Finish with a line of the form: The answer is <answer>."
)


class StepFusion(ProposalFusion):
    """Every member proposes the next step (its text up to the first `separator`, a newline by default); the
    scorer picks one; repeat until a step holds an answer marker ("The answer is", "####"), a member's answer
    ends (EOS or a stop string), `max_steps` or max_tokens. Identical proposals need no scoring.

    Scorers: "perplexity" (every member scores every step given the steps so far; lowest mean per-character
    perplexity wins; members need the score capability), "judge" (the `judge` member's P("Yes") to "is this
    step correct?", read from token probabilities, one scoring call per step; if it fails the first proposal
    is kept and the trace says so), or a callable verifier `(request, steps_so_far, candidate) -> float`
    (sync or async; highest wins). `hint` is added to the system message (math by default; set None for code,
    where a step is a line and the answer ends at EOS)."""

    name: ClassVar[str] = "step-fusion"
    summary: ClassVar[str] = (
        "members propose reasoning steps; a scorer (perplexity, judge, verifier) picks each"
    )
    paper: ClassVar[str | None] = (
        "Lightman et al. 2023, Let's Verify Step by Step (arXiv:2305.20050): process-level scoring of "
        "reasoning steps; Liu et al. 2024, Cool-Fusion (arXiv:2407.19807): members propose, all score"
    )
    piece: ClassVar[str] = "step"

    scorer: Literal["perplexity", "judge"] | Verifier = Field(
        default="perplexity",
        description='"perplexity", "judge", or a callable (request, steps_so_far, candidate) -> float '
        "(higher wins)",
    )
    judge: str | None = Field(
        default=None, description='the member that judges when scorer="judge"; default: the first'
    )
    separator: str = Field(default="\n", min_length=1, description="the text that ends a step")
    answer_markers: list[str] = Field(
        default_factory=lambda: ["The answer is", "####"],
        description="a step holding one of these ends the answer",
    )
    max_steps: int = Field(default=12, ge=1, le=256, description="most steps before the answer is cut off")
    step_tokens: int = Field(
        default=48, ge=1, le=1024, description="most new tokens a member writes for one step"
    )
    hint: str | None = Field(default=MATH_HINT, description="added to the system message; None adds nothing")

    def role_members(self, members: Sequence[Member]) -> list[Member]:
        return [self._judge(members)] if self.scorer == "judge" else []

    def check(self, members: Mapping[str, Member]) -> None:
        super().check(members)
        if self.scorer == "perplexity":
            for member in self.participants(list(members.values())):
                member.require(Capability.SCORE, 'step-fusion with scorer="perplexity"')
        elif self.scorer == "judge":
            self._judge(list(members.values())).require(Capability.SCORE, 'step-fusion with scorer="judge"')

    def _judge(self, members: Sequence[Member]) -> Member:
        """The judge: the member named `judge` (any member of the ensemble), else the first proposer."""
        if self.judge:
            return resolve_member(members, self.judge, "step-fusion.judge")
        return self.participants(members)[0]

    @property
    def proposal_tokens(self) -> int:
        return self.step_tokens

    @property
    def max_rounds(self) -> int:
        return self.max_steps

    def prepare(self, request: Request) -> Request:
        return with_hint(request, self.hint)

    def cut(self, text: str, finished: bool, at_start: bool) -> tuple[str, bool]:
        body = text.lstrip() if at_start else text.lstrip("\r\n")
        end = body.find(self.separator, 1)
        if end >= 0:
            return body[:end].rstrip(), False
        return body.rstrip(), finished

    def prefix(self, pieces: Sequence[str]) -> str:
        return "".join(pieces) + (self.separator if pieces else "")

    def join(self, pieces: Sequence[str], piece: str) -> str:
        return self.separator + piece if pieces else piece

    def ends(self, proposal: Proposal) -> bool:
        return any(marker in proposal.text for marker in self.answer_markers)

    async def choose(
        self, ctx: RunContext, request: Request, prefix: str, pieces: Sequence[str], candidates: Sequence[str]
    ) -> Choice:
        steps = [p.removeprefix(self.separator) for p in pieces]
        if callable(self.scorer):
            scores = await asyncio.gather(*(_verify(self.scorer, request, steps, c) for c in candidates))
            best = max(range(len(candidates)), key=scores.__getitem__)
            return Choice(best, {"score_name": "verifier", "scores": scores})
        members = list(ctx.members.values())
        if self.scorer == "judge":
            return await self._judge_choice(ctx, self._judge(members), request, steps, candidates)
        found = await score_candidates(
            ctx, self.participants(members), request, prefix, candidates, role="score step"
        )
        if not found.combined:
            raise AllMembersFailedError(found.errors)
        return Choice(found.best, {"score_name": "perplexity", "scores": found.combined, **found.details()})

    async def _judge_choice(
        self, ctx: RunContext, judge: Member, request: Request, steps: list[str], candidates: Sequence[str]
    ) -> Choice:
        prompts = [step_judge_prompt(judge, request, steps, c) for c in candidates]
        try:
            p_yes = (await option_probabilities(ctx, judge, prompts, ["Yes", "No"], role="judge step"))[:, 0]
        except MemberError as err:
            return Choice(0, {"score_name": "judge", "judge": judge.name, "judge_failed": str(err)})
        scores = [float(p) for p in p_yes]
        best = max(range(len(candidates)), key=scores.__getitem__)
        return Choice(best, {"score_name": "judge P(Yes)", "judge": judge.name, "scores": scores})


async def _verify(verifier: Verifier, request: Request, steps: list[str], candidate: str) -> float:
    """A sync verifier runs in a worker thread (it may be slow); an async one is awaited."""
    if inspect.iscoroutinefunction(verifier):
        return float(await verifier(request, list(steps), candidate))
    value = await to_thread(verifier, request, list(steps), candidate)
    return float(await value if inspect.isawaitable(value) else value)


def with_hint(request: Request, hint: str | None) -> Request:
    """The request with `hint` appended to its system message (or as a new one first)."""
    if not hint:
        return request
    messages = request.messages
    if messages[0].role == "system":
        first = messages[0].model_copy(update={"content": f"{messages[0].content}\n\n{hint}".strip()})
        return request.model_copy(update={"messages": [first, *messages[1:]]})
    return request.model_copy(update={"messages": [Message(role="system", content=hint), *messages]})
