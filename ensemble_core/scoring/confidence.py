"""Confidence scorers for cascades: how sure a member is of its own answer, higher is surer.

- `mean-logprob`: the mean token log-probability of the answer (FrugalGPT's cheapest signal);
- `self-verify`: P("Yes") when the member (or a named, stronger `verifier`) is asked whether the answer is
  correct (AutoMix);
- `agreement`: the share of k sampled answers that agree with the answer (self-consistency);
- `peer-agreement`: the share of other (cheap) members whose own answer agrees with it.

Each is a pydantic model, so a config names one by `kind` with its parameters; subclass `ConfidenceScorer` for
a custom one.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from ensemble_core.errors import CapabilityError, ConfigError, MemberError
from ensemble_core.members.base import Capability, Member
from ensemble_core.run_context import RunContext
from ensemble_core.scoring.answers import NormaliserName, answer_key, answer_text, resolve_normaliser
from ensemble_core.scoring.judges import self_verification
from ensemble_core.scoring.sampling import sampled_requests
from ensemble_core.types import Generation, Request


class ConfidenceScorer(BaseModel, ABC):
    """How confident `member` is of `answer` to `request`; higher is more confident."""

    model_config = ConfigDict(extra="forbid")

    kind: str
    default_threshold: ClassVar[float]
    requires: ClassVar[frozenset[Capability]] = frozenset()

    def helpers(self) -> list[str]:
        """Names of the other members this scorer calls (a verifier, peers); they must be in the ensemble."""
        return []

    def judge_of(self, answering: str) -> str:
        """The member whose capabilities (`requires`) score an answer by `answering`."""
        return answering

    @abstractmethod
    async def confidence(
        self, ctx: RunContext, member: Member, request: Request, answer: Generation
    ) -> float:
        """The score; member calls go through `ctx` so they are timed, costed and traced."""


class MeanLogprob(ConfidenceScorer):
    """Mean token log-probability of the answer (<= 0): from the generation's logprobs, or by scoring the
    answer after the prompt when the member returned none but can score."""

    kind: Literal["mean-logprob"] = "mean-logprob"
    default_threshold: ClassVar[float] = -1.0

    async def confidence(
        self, ctx: RunContext, member: Member, request: Request, answer: Generation
    ) -> float:
        if answer.mean_logprob is not None:
            return answer.mean_logprob
        if not member.has(Capability.SCORE):
            raise CapabilityError(
                f"member {member.name!r} returned no token logprobs and cannot score, so the mean-logprob "
                "scorer has nothing to read: use the 'agreement' scorer for it"
            )
        prompt = member.format_prompt(request)
        scores = await ctx.score(member, [(prompt, answer_text(answer))], role="confidence")
        return scores[0].mean_logprob


class SelfVerify(ConfidenceScorer):
    """AutoMix self-verification: P("Yes") that the answer is correct, asked of the answering member or of a
    named `verifier` (a stronger member reading the cheap answer: one scoring pass, no generation). The one
    asked needs `score`."""

    kind: Literal["self-verify"] = "self-verify"
    default_threshold: ClassVar[float] = 0.5
    requires: ClassVar[frozenset[Capability]] = frozenset({Capability.SCORE})
    verifier: str | None = Field(
        default=None, description="member that judges the answer; default: the member that answered"
    )

    def helpers(self) -> list[str]:
        return [self.verifier] if self.verifier else []

    def judge_of(self, answering: str) -> str:
        return self.verifier or answering

    async def confidence(
        self, ctx: RunContext, member: Member, request: Request, answer: Generation
    ) -> float:
        judge = ctx.member(self.verifier) if self.verifier else member
        return await self_verification(ctx, judge, request, answer)


class Agreement(ConfidenceScorer):
    """The share of `samples` answers, sampled at `temperature` with seeds, whose normalised form equals the
    answer's; samples that fail are left out of the share."""

    kind: Literal["agreement"] = "agreement"
    default_threshold: ClassVar[float] = 0.5
    samples: int = Field(default=4, ge=1, le=64, description="how many extra answers to sample")
    temperature: float = Field(
        default=0.7, gt=0.0, le=10.0, description="sampling temperature of the samples"
    )
    normaliser: NormaliserName = Field(default="auto", description="how answers are compared (see Vote)")

    async def confidence(
        self, ctx: RunContext, member: Member, request: Request, answer: Generation
    ) -> float:
        requests = sampled_requests(request, self.samples, self.temperature, first_seed=1)
        samples = await asyncio.gather(*(ctx.try_generate(member, r, role="sample") for r in requests))
        answered = [s for s in samples if s is not None]
        if not answered:
            raise MemberError(member.name, f"all {self.samples} samples for the agreement score failed")
        normalise = resolve_normaliser(self.normaliser)
        key = answer_key(answer, normalise)
        return sum(answer_key(s, normalise) == key for s in answered) / len(answered)


class PeerAgreement(ConfidenceScorer):
    """The share of `peers` (other members, answering the same request now) whose normalised answer equals
    this one; peers that fail are left out of the share."""

    kind: Literal["peer-agreement"] = "peer-agreement"
    default_threshold: ClassVar[float] = 0.5
    peers: list[str] = Field(min_length=1, description="members whose answers are compared with this one")
    normaliser: NormaliserName = Field(default="auto", description="how answers are compared (see Vote)")

    def helpers(self) -> list[str]:
        return list(self.peers)

    async def confidence(
        self, ctx: RunContext, member: Member, request: Request, answer: Generation
    ) -> float:
        peers = [ctx.member(name) for name in self.peers if name != member.name]
        answers, errors = await ctx.generate_all(peers, [request], role="peer", raise_if_none=False)
        if not answers:
            raise MemberError(member.name, f"no peer answered for the peer-agreement score ({errors})")
        normalise = resolve_normaliser(self.normaliser)
        key = answer_key(answer, normalise)
        return sum(answer_key(a, normalise) == key for a in answers) / len(answers)


BuiltinScorer = Annotated[MeanLogprob | SelfVerify | Agreement | PeerAgreement, Field(discriminator="kind")]
_BUILTIN: TypeAdapter[Any] = TypeAdapter(BuiltinScorer)
SCORER_KINDS = ("mean-logprob", "self-verify", "agreement", "peer-agreement")


def to_scorer(value: Any) -> Any:
    """A scorer from its kind ("agreement"), a dict ({"kind": "agreement", "samples": 5}) or an instance."""
    if isinstance(value, ConfidenceScorer):
        return value
    if isinstance(value, str):
        value = {"kind": value}
    if isinstance(value, dict) and value.get("kind") not in SCORER_KINDS:
        raise ConfigError(
            f"unknown scorer kind {value.get('kind')!r}; choose one of: {', '.join(SCORER_KINDS)}"
        )
    return _BUILTIN.validate_python(value)
