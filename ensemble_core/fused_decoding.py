"""The lockstep decoding loop of token fusion: every member steps on its own KV cache, the distributions are
mixed, one token is chosen per row, and every member reads that token (in its own ids).

Rows are requests decoded together (a batch); each member holds one `StepSession` with a row per request,
opened by `open_session` (a strategy passes `RunContext.step_session`, which bounds each member's stepping
time by its timeout and records its calls). A member whose session fails is dropped and the others go on.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from pydantic import BaseModel, Field

from ensemble_core.alignment import Alignment
from ensemble_core.alignment_cache import cached_alignment
from ensemble_core.errors import AllMembersFailedError, CapabilityError
from ensemble_core.members.base import Member
from ensemble_core.members.step import StepSession
from ensemble_core.members.text_stream import TextAssembler
from ensemble_core.mixing import Mixer, Mixing, UnionConstraint, choose_constrained, generator_for
from ensemble_core.types import FinishReason, Request


class FusedToken(BaseModel):
    """One chosen token, for the detailed trace: its text and the members whose own top token it was."""

    text: str
    agreed: list[str]


class RowOutcome(BaseModel):
    """What fusion produced for one request, and the per-member book-keeping its trace needs."""

    text: str = ""
    finish_reason: FinishReason = "length"
    n_tokens: int = 0
    agreement: dict[str, int] = Field(
        default_factory=dict, description="member -> tokens where its top choice won"
    )
    prompt_tokens: dict[str, int] = Field(default_factory=dict)
    member_ids: dict[str, list[int]] = Field(
        default_factory=dict, description="member -> the answer in its own ids"
    )
    tokens: list[FusedToken] | None = None


@dataclass
class Timing:
    """Where the time of the loop went: member forward passes, alignment (projection, mixing, feeding), and
    the grammar constraints (masks in the union vocabulary, advancing each member's grammar state)."""

    forward_s: dict[str, float] = field(default_factory=dict)
    mix_s: float = 0.0
    feed_s: float = 0.0
    constrain_s: float = 0.0
    steps: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "forward_s": dict(self.forward_s),
            "mix_s": self.mix_s,
            "feed_s": self.feed_s,
            "constrain_s": self.constrain_s,
            "steps": self.steps,
        }


def require_tokenizer(member: Member) -> None:
    """Token fusion aligns vocabularies, so a member must expose `tokenizer` and `eos_ids` (HFMember does);
    checked on the class, so nothing is loaded."""
    if not (hasattr(type(member), "tokenizer") and hasattr(type(member), "eos_ids")):
        raise CapabilityError(
            f"member {member.name!r} ({type(member).__name__}) exposes no tokenizer and eos_ids, which token "
            "fusion needs to align vocabularies; use an HFMember"
        )


def member_alignment(members: Sequence[Member]) -> Alignment:
    """The alignment of the members' tokenizers, with each member's end-of-sequence ids (cached per process
    and on disk)."""
    for member in members:
        require_tokenizer(member)
    tokenizers = [m.tokenizer for m in members]  # type: ignore[attr-defined]
    return cached_alignment(tokenizers, [m.eos_ids() for m in members])  # type: ignore[attr-defined]


MixerFactory = Callable[[Alignment], Mixer]


class FusedDecoding:
    """Decode `requests` together with `members`, mixing with per-row `weights` ([rows, members], rows sum to
    1): by a `Mixing` rule, or by the mixer a factory makes for the members' alignment (contrastive)."""

    def __init__(
        self,
        members: Sequence[Member],
        requests: Sequence[Request],
        weights: torch.Tensor,
        mixing: Mixing | MixerFactory,
        trace_tokens: bool = False,
        open_session: Callable[[Member, list[str]], StepSession] | None = None,
    ):
        self.members = list(members)
        self.open_session = open_session or (lambda member, prompts: member.step_session(prompts))
        self.requests = list(requests)
        self.weights = weights.float()
        self.alignment = member_alignment(self.members)
        self.mixer = mixing(self.alignment) if callable(mixing) else Mixer(self.alignment, mixing)
        self.errors: dict[str, str] = {}
        self.timing = Timing(forward_s={m.name: 0.0 for m in self.members})
        rows = len(self.requests)
        stops = [sorted({s for m in self.members for s in m.stop_strings(r)}) for r in self.requests]
        self.assemblers = [TextAssembler(self.alignment.decode, s) for s in stops]
        self.outcomes = [
            RowOutcome(
                agreement={m.name: 0 for m in self.members},
                member_ids={m.name: [] for m in self.members},
                tokens=[] if trace_tokens else None,
            )
            for _ in range(rows)
        ]
        self.chosen: list[list[int]] = [[] for _ in range(rows)]  # union ids of each row's answer
        self.active = [True] * rows
        self.cancelled = threading.Event()
        self.sessions: dict[int, StepSession] = {}
        self.constraints: dict[int, UnionConstraint] = {}
        for i, member in enumerate(self.members):
            self._guard(i, functools.partial(self._open, i, member))
        self._require_someone()
        self._constrain()

    # sessions -----------------------------------------------------------------------------------------------
    def _open(self, i: int, member: Member) -> None:
        prompts = [member.format_prompt(r) for r in self.requests]
        session = self.open_session(member, prompts)
        self.sessions[i] = session
        for row, outcome in enumerate(self.outcomes):
            outcome.prompt_tokens[member.name] = len(session.token_ids(row))

    def _constrain(self) -> None:
        """Each row's grammar (a forced tool call, a JSON schema) from every member that can enforce one: its
        own grammar state per member, checked in the union vocabulary."""
        for row, request in enumerate(self.requests):
            own = {}
            for i in self.sessions:
                make = getattr(self.members[i], "constraint", None)
                constraint = make(request) if make is not None else None
                if constraint is not None:
                    own[i] = constraint
            if own:
                self.constraints[row] = UnionConstraint(self.alignment, own)

    def _guard(self, i: int, action: Callable[[], object]) -> None:
        """Run a member's action, timed; a failure (its session's time budget spent, say) drops the
        member."""
        start = time.perf_counter()
        try:
            action()
        except Exception as err:
            self._drop(i, str(err))
        finally:
            self.timing.forward_s[self.members[i].name] += time.perf_counter() - start

    def _drop(self, i: int, error: str) -> None:
        self.errors[self.members[i].name] = error
        session = self.sessions.pop(i, None)
        if session is not None:
            session.close()

    def _require_someone(self) -> None:
        if not self.sessions:
            raise AllMembersFailedError({name: RuntimeError(error) for name, error in self.errors.items()})

    def live_weights(self) -> tuple[list[int], torch.Tensor]:
        """The members still stepping and their weights, renormalised per row (uniform where all are 0)."""
        alive = sorted(self.sessions)
        w = self.weights[:, alive]
        total = w.sum(-1, keepdim=True)
        uniform = torch.full_like(w, 1.0 / len(alive))
        return alive, torch.where(total > 0, w / total.clamp_min(1e-30), uniform)

    # the loop
    # -------------------------------------------------------------------------------------------------
    def steps(self) -> Iterator[list[str]]:
        """Decode until every row has ended; yield after each step the new text of each row (possibly "")."""
        max_tokens = [r.params.max_tokens for r in self.requests]
        generators = [generator_for(r.params, torch.device("cpu")) for r in self.requests]
        params = [r.params for r in self.requests]
        while any(self.active) and not self.cancelled.is_set():
            alive, weights = self.live_weights()
            start = time.perf_counter()
            logprobs = [self.sessions[i].logprobs() for i in alive]
            sampling = any(not p.greedy for p in params)
            scores = self.mixer.mix(logprobs, alive, weights, as_log=sampling)
            tops = {i: self.mixer.top(i, lp) for i, lp in zip(alive, logprobs, strict=True)}
            constrained = {row: c for row, c in self.constraints.items() if self.active[row]}
            mixed = time.perf_counter()
            self.timing.mix_s += mixed - start
            picks = choose_constrained(
                scores.cpu() if sampling else scores,
                params,
                generators,
                constrained,
                alive,
                self.mixer.log_space(as_log=sampling),
            )
            self.timing.constrain_s += time.perf_counter() - mixed
            deltas = [""] * len(self.requests)
            taken = [
                self.active[row] and union_id not in self.alignment.eos for row, union_id in enumerate(picks)
            ]
            for row, union_id in enumerate(picks):
                if self.active[row]:
                    deltas[row] = self._take(row, union_id, tops, max_tokens[row])
            self._advance(alive, picks, taken)
            self._require_someone()
            self.timing.steps += 1
            yield deltas
        tails = [assembler.finish() for assembler in self.assemblers]
        for outcome, assembler in zip(self.outcomes, self.assemblers, strict=True):
            outcome.text = assembler.text
        if any(tails):
            yield tails

    def _take(self, row: int, union_id: int, tops: dict[int, list[int]], max_tokens: int) -> str:
        """Book the chosen token of one row; return its new text. Ends the row at EOS, a stop string or the
        limit."""
        outcome = self.outcomes[row]
        if union_id in self.alignment.eos:
            self.active[row] = False
            outcome.finish_reason = "stop"
            return ""
        agreed = [self.members[i].name for i, top in tops.items() if top[row] == union_id]
        for name in agreed:
            outcome.agreement[name] += 1
        outcome.n_tokens += 1
        self.chosen[row].append(union_id)
        text = self.assemblers[row].add(union_id)
        if outcome.tokens is not None:
            outcome.tokens.append(FusedToken(text=self.alignment.decode([union_id]), agreed=agreed))
        if self.assemblers[row].stopped:
            self.active[row] = False
            outcome.finish_reason = "stop"
        elif outcome.n_tokens >= max_tokens:
            self.active[row] = False
            outcome.finish_reason = "length"
        return text

    def _advance(self, alive: list[int], picks: list[int], taken: list[bool]) -> None:
        """Give every live member the chosen token of each row that took one, in its own ids; run the forward
        pass only for rows that go on (a row that just ended needs no further distribution)."""
        for i in alive:
            member = self.members[i]
            start = time.perf_counter()
            spelled = [self.alignment.feed(i, u) if taken[row] else [] for row, u in enumerate(picks)]
            self.timing.feed_s += time.perf_counter() - start
            window = member.context_window
            session = self.sessions[i]
            for row, ids in enumerate(spelled):
                self.outcomes[row].member_ids[member.name].extend(ids)
                if ids and row in self.constraints:
                    started = time.perf_counter()
                    self.constraints[row].advance(i, ids)
                    self.timing.constrain_s += time.perf_counter() - started
                if (
                    self.active[row]
                    and window is not None
                    and len(session.token_ids(row)) + len(ids) >= window
                ):
                    self.active[row] = False
                    self.outcomes[row].finish_reason = "length"
            feeds = [ids if self.active[row] else [] for row, ids in enumerate(spelled)]
            if any(feeds):
                self._guard(i, functools.partial(session.advance, feeds))

    def run(self) -> list[RowOutcome]:
        """Decode to the end; the outcome of each row."""
        for _ in self.steps():
            pass
        return self.outcomes

    def close(self) -> None:
        for session in self.sessions.values():
            session.close()
