"""What tuning a short-answer set needs, recorded once per item: every member's greedy answer (right or not,
its mean token log-probability, CPU seconds) and the confidence scores a cascade can escalate on, each with
what it cost: a member's P("Yes") that its own answer is right, and the strongest member's P("Yes") that a
cheaper member's answer is right. Members run one after another, so each call's CPU seconds are its own.
Records append to `<out>/cache/answers.jsonl`; an interrupted run goes on where it stopped."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from ensemble_core.asyncio_bridge import run_sync
from ensemble_core.errors import EnsembleError
from ensemble_core.eval.items import AnswerItem
from ensemble_core.eval.metrics import answer_correct
from ensemble_core.eval.protocols import default_max_tokens, request_for
from ensemble_core.eval.runner import ResultCache
from ensemble_core.members.base import Capability, Member
from ensemble_core.run_context import RunContext
from ensemble_core.scoring.judges import self_verification
from ensemble_core.types import Generation

VERIFY_ROLE = "verify"


class Answered(BaseModel):
    """One member's answer to one item."""

    model_config = ConfigDict(extra="forbid")

    text: str
    correct: bool
    mean_logprob: float | None
    cpu_s: float
    latency_s: float
    tokens: int


class Verified(BaseModel):
    """A verifier's P("Yes") that an answerer's answer is right, and its CPU seconds."""

    model_config = ConfigDict(extra="forbid")

    p_yes: float
    cpu_s: float


class AnswerRecord(BaseModel):
    """Every member's answer to one item, and the verifications keyed "verifier>answerer"."""

    model_config = ConfigDict(extra="forbid")

    answers: dict[str, Answered]
    verified: dict[str, Verified] = Field(default_factory=dict)


def verification_pairs(
    members: Sequence[Member], verified: Sequence[str] | None = None
) -> list[tuple[Member, Member]]:
    """(verifier, answerer): each answerer (`verified`, default every member but the last) checks its own
    answer, and the last, strongest member checks it too, where the verifier can score."""
    strongest = members[-1]
    answerers = [m for m in members[:-1] if verified is None or m.name in verified]
    pairs = [(m, m) for m in answerers] + [(strongest, m) for m in answerers]
    return [(v, a) for v, a in pairs if v.has(Capability.SCORE)]


def record_answers(
    items: Sequence[AnswerItem],
    members: Sequence[Member],
    out: Path,
    *,
    seed: int = 0,
    verified: Sequence[str] | None = None,
    step: Callable[[], None] | None = None,
) -> dict[str, AnswerRecord]:
    """Every item's record (cached ones read back, the rest made now), by item id; `verified` names the
    members whose answers are verified (see `verification_pairs`)."""
    cache = ResultCache(out)
    records = {i: AnswerRecord.model_validate(v) for i, v in cache.load("answers").items()}
    names = [m.name for m in members]
    for item in items:
        record = records.get(item.id)
        if record is None or set(record.answers) != set(names):
            records[item.id] = record = _record(item, members, seed, verified)
            cache.append("answers", item.id, record.model_dump())
        if step is not None:
            step()
    return {item.id: records[item.id] for item in items}


def _record(
    item: AnswerItem, members: Sequence[Member], seed: int, verified: Sequence[str] | None
) -> AnswerRecord:
    request = request_for(item, default_max_tokens(item), seed)
    by_name = {m.name: m for m in members}
    answers: dict[str, Answered] = {}
    generations: dict[str, Generation] = {}
    for member in members:
        ctx = RunContext(by_name, "record")
        try:
            generation = run_sync(ctx.generate(member, request, role="answer"))
        except EnsembleError:
            generation = Generation(member=member.name, text="")
        generations[member.name] = generation
        call = ctx.trace.calls[-1]
        answers[member.name] = Answered(
            text=generation.text,
            correct=answer_correct(item, generation.text),
            mean_logprob=generation.mean_logprob,
            cpu_s=generation.cpu_s or 0.0,
            latency_s=call.latency_s,
            tokens=generation.usage.total_tokens,
        )
    checks: dict[str, Verified] = {}
    for verifier, answerer in verification_pairs(members, verified):
        ctx = RunContext(by_name, "record")
        try:
            p_yes = run_sync(self_verification(ctx, verifier, request, generations[answerer.name]))
        except EnsembleError:
            continue
        cpu = sum(c.cpu_s or 0.0 for c in ctx.trace.calls)
        checks[f"{verifier.name}>{answerer.name}"] = Verified(p_yes=p_yes, cpu_s=cpu)
    return AnswerRecord(answers=answers, verified=checks)
