"""The draft-and-verify loop of speculative decoding (Leviathan et al. 2023; Chen et al. 2023): a small member
(the drafter) proposes a few tokens one by one, the large one (the verifier) reads them all in one forward
pass (`StepSession.advance_positions`), keeps the longest prefix it agrees with and adds one token of its
own; both take the rejected tokens back (`StepSession.rewind`). Each member holds one session with one row.

What is exact: a greedy answer is the verifier's own greedy answer, token for token (a drafted token is kept
only where it is the verifier's argmax, and the verifier's argmax follows it). A sampled answer is
distributed as the verifier's (after the request's temperature and top-p):

- same tokenizer: drafted token x, drawn from the drafter's q, is kept with probability min(1, p(x)/q(x));
  a rejection is resampled from max(0, p - q), normalised (the standard rule);
- different tokenizers: the draft's text is spelled in the verifier's ids through the union vocabulary
  (`alignment`) and checked as a fixed proposal: x is kept with probability p(x), a rejection resampled from
  p without x. That is exact for any proposal, at a lower acceptance rate; greedy checks are the same as for
  one tokenizer. The drafter then reads the kept tokens in its own ids.

Tokenizers that cannot spell every byte cannot carry one member's text to the other exactly: refused.

"Exact" is exact arithmetic, and float32 in practice. In bfloat16 a pass over several tokens rounds
differently than a one-token step (matrix kernels sum in another order for another number of rows), so
where the verifier's two best tokens tie or nearly tie, its verdict can differ from its own one-token
decoding and the answer part from it there (transformers' assisted generation does the same).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from pydantic import BaseModel

from ensemble_core.alignment import Alignment, AlignmentError
from ensemble_core.alignment_cache import cached_alignment
from ensemble_core.errors import CapabilityError
from ensemble_core.members.base import Member
from ensemble_core.members.step import StepSession
from ensemble_core.members.text_stream import TextAssembler
from ensemble_core.mixing import generator_for, sampling_probs
from ensemble_core.types import FinishReason, Params, Request

DRAFTER, VERIFIER = 0, 1  # the members' indexes in their alignment


def pair_alignment(drafter: Member, verifier: Member) -> Alignment:
    """The alignment of the drafter's and the verifier's tokenizers, or a `CapabilityError` naming both when
    speculation between them cannot be exact."""
    for member in (drafter, verifier):
        if not (hasattr(type(member), "tokenizer") and hasattr(type(member), "eos_ids")):
            raise CapabilityError(
                f"member {member.name!r} ({type(member).__name__}) exposes no tokenizer and eos_ids, which "
                "speculative decoding needs to read drafted tokens; use an HFMember"
            )
    pair = f"drafter {drafter.name!r} and verifier {verifier.name!r}"
    advice = "use a drafter that shares the verifier's tokenizer (e.g. qwen05 drafting for qwen15)"
    try:
        alignment = cached_alignment(
            [drafter.tokenizer, verifier.tokenizer],  # type: ignore[attr-defined]
            [drafter.eos_ids(), verifier.eos_ids()],  # type: ignore[attr-defined]
        )
    except AlignmentError as err:
        raise CapabilityError(
            f"speculative decoding: the {pair} tokenizers cannot be aligned ({err}); {advice}"
        ) from err
    if not alignment.shared:
        for member, table in zip((drafter, verifier), alignment.tables, strict=True):
            if len(table.byte_ids) < 256:
                raise CapabilityError(
                    f"speculative decoding: the {pair} have different tokenizers, and {member.name!r}'s "
                    "cannot spell every byte (no byte-level tokens or <0xNN> byte fallback), so one member's "
                    f"text cannot be read exactly by the other; {advice}"
                )
    return alignment


@dataclass
class DraftSchedule:
    """How many tokens to draft next. Fixed (`fixed`), or adaptive: from `start`, +2 after a round whose
    every draft was kept, -1 after one with a rejection, within [1, `maximum`] (transformers' heuristic
    schedule); an adaptive draft also stops at a token the drafter itself gives under `min_confidence`."""

    fixed: int | None
    maximum: int
    min_confidence: float
    start: int = 4

    def __post_init__(self) -> None:
        self.current = self.fixed if self.fixed is not None else min(self.start, self.maximum)

    def stops_at(self, confidence: float) -> bool:
        return self.fixed is None and confidence < self.min_confidence

    def update(self, drafted: int, kept: int) -> None:
        if self.fixed is not None or not drafted:
            return
        step = 2 if kept == drafted else -1
        self.current = max(1, min(self.maximum, self.current + step))


def accept_draft(
    dists: Sequence[torch.Tensor],
    draft: Sequence[int],
    draft_probs: Sequence[torch.Tensor] | None,
    params: Params,
    generator: torch.Generator | None,
) -> tuple[int, int]:
    """(how many drafted tokens the verifier keeps, its next token). `dists[i]` are the verifier's
    log-probabilities before `draft[i]` (one more, after the last draft); `draft_probs[i]` the distribution
    the drafter drew `draft[i]` from (same tokenizer, sampled), or None for a fixed proposal. Sampling is done
    on the CPU (its seeded generator lives there), whatever devices the members run on."""
    if params.greedy:
        kept = 0
        while kept < len(draft) and int(dists[kept].argmax()) == draft[kept]:
            kept += 1
        return kept, int(dists[kept].argmax())
    for i, token in enumerate(draft):
        p = sampling_probs(dists[i][None].cpu(), params)[0]
        q = None if draft_probs is None else _same_width(draft_probs[i], p.shape[-1])
        chance = float(p[token]) if q is None else min(1.0, float(p[token] / q[token].clamp_min(1e-30)))
        if float(torch.rand(1, generator=generator)) < chance:
            continue
        residual = p.clone() if q is None else (p - q).clamp_min_(0.0)
        if q is None:
            residual[token] = 0.0
        if not float(residual.sum()) > 0:
            residual = p
        return i, int(torch.multinomial(residual, 1, generator=generator))
    last = sampling_probs(dists[len(draft)][None].cpu(), params)[0]
    return len(draft), int(torch.multinomial(last, 1, generator=generator))


def _same_width(probs: torch.Tensor, width: int) -> torch.Tensor:
    """The drafter's distribution over the verifier's output width (models may pad their output layers)."""
    if probs.shape[-1] == width:
        return probs
    out = torch.zeros(width, dtype=probs.dtype)
    n = min(width, probs.shape[-1])
    out[:n] = probs[:n]
    return out


class SpeculativeOutcome(BaseModel):
    """What speculation produced for one request, and the counts its trace shows."""

    text: str = ""
    finish_reason: FinishReason = "length"
    n_tokens: int = 0
    rounds: int = 0
    drafted: int = 0
    accepted: int = 0
    draft_s: float = 0.0
    verify_s: float = 0.0
    drafter_error: str | None = None


class _Drafter:
    """The drafter's side: its session, the ids it has still to read, and how a draft becomes the
    verifier's ids (as they are, or spelled through the union vocabulary). A failing drafter is dropped:
    the verifier then decodes alone, which changes nothing in the answer."""

    def __init__(
        self,
        member: Member,
        alignment: Alignment,
        verifier_eos: Sequence[int],
        session: StepSession | None,
        error: str | None,
    ):
        self.member = member
        self.alignment = alignment
        self.session = session
        self.error = error
        self.verifier_eos = list(verifier_eos)
        own_eos = set(member.eos_ids())  # type: ignore[attr-defined]
        self.stop = own_eos | set(verifier_eos) if alignment.shared else own_eos
        self.pending: list[int] = []  # kept tokens the drafter has not read yet, in its own ids
        self.drafted: list[int] = []  # this round's draft, in its own ids (the last one not fed)

    def room(self) -> int:
        """How many tokens it can still draft within its context window."""
        if self.session is None:
            return 0
        window = self.member.context_window
        if window is None:
            return 1 << 30
        return window - 1 - len(self.session.token_ids(0)) - len(self.pending)

    def draft(
        self, k: int, schedule: DraftSchedule, params: Params, generator: torch.Generator | None
    ) -> tuple[list[int], list[torch.Tensor] | None]:
        """Up to `k` proposed tokens in the verifier's ids, and (same tokenizer, sampled) the distributions
        they were drawn from."""
        self.drafted = []
        k = min(k, self.room())
        if k <= 0 or self.session is None:
            return [], None
        probs: list[torch.Tensor] = []
        try:
            logprobs = self.session.advance([self.pending]) if self.pending else self.session.logprobs()
            self.pending = []
            for i in range(k):
                if i:
                    logprobs = self.session.advance([[self.drafted[-1]]])
                token, confidence, q = _pick(logprobs[0], params, generator)
                self.drafted.append(token)
                probs.append(q)
                if token in self.stop or schedule.stops_at(confidence):
                    break
        except Exception as err:
            self._drop(err)
            return [], None
        if self.alignment.shared:
            return list(self.drafted), None if params.greedy else probs
        return self._spelled(k), None

    def _spelled(self, k: int) -> list[int]:
        """The draft as the verifier's ids: its text spelled by the verifier (an incomplete UTF-8 character at
        the end left out), and the verifier's end of sequence where the drafter ended; at most `k`."""
        ended = bool(self.drafted) and self.drafted[-1] in self.stop
        text = self.alignment.tables[DRAFTER].text_bytes(self.drafted[:-1] if ended else self.drafted)
        text = _complete_utf8(text)
        ids = self.alignment.spell(VERIFIER, text) if text else []
        if ended and self.verifier_eos:
            ids.append(self.verifier_eos[0])
        return ids[:k]

    def sync(self, kept: Sequence[int], token: int) -> None:
        """Read what the verifier kept (`kept` drafted tokens and its own `token`, in verifier ids) and take
        back the rest of the draft."""
        if self.session is None:
            return
        fed = max(0, len(self.drafted) - 1)
        try:
            if self.alignment.shared:
                if self.drafted and len(kept) == len(self.drafted):
                    self.pending = [self.drafted[-1], token]
                else:
                    if fed - len(kept) > 0:
                        self.session.rewind([fed - len(kept)])
                    self.pending.append(token)
            else:
                if fed:
                    self.session.rewind([fed])
                for v in [*kept, token]:
                    union_id = int(self.alignment.to_union[VERIFIER][v])
                    self.pending.extend(self.alignment.feed(DRAFTER, union_id))
        except Exception as err:
            self._drop(err)
        self.drafted = []

    def _drop(self, err: BaseException) -> None:
        self.error = f"{type(err).__name__}: {err}"
        session, self.session = self.session, None
        if session is not None:
            session.close()

    def close(self) -> None:
        if self.session is not None:
            self.session.close()


def _require_rewind(session: StepSession, member: Member) -> None:
    """A `CapabilityError` (the session closed) when the member's sessions cannot take tokens back."""
    if not session.supports_rewind:
        session.close()
        raise CapabilityError(
            f"member {member.name!r}'s step sessions cannot take back tokens (its KV cache has "
            "sliding-window or linear-attention layers), which speculative decoding needs to drop rejected "
            "drafts; use models with full attention in every layer (e.g. qwen05 drafting for qwen15)"
        )


def _pick(
    logprobs: torch.Tensor, params: Params, generator: torch.Generator | None
) -> tuple[int, float, torch.Tensor]:
    """The drafter's token from its log-probabilities [vocab]: the argmax, or a sample after the request's
    warping; with its probability (how confident the drafter is) and the distribution it came from."""
    if params.greedy:
        token = int(logprobs.argmax())
        return token, float(logprobs[token].exp()), logprobs
    probs = sampling_probs(logprobs[None].cpu(), params)[0]
    token = int(torch.multinomial(probs, 1, generator=generator))
    return token, float(probs[token]), probs


def _complete_utf8(data: bytes) -> bytes:
    """`data` without an incomplete UTF-8 character at its end (a character is at most 4 bytes)."""
    for end in range(len(data), max(-1, len(data) - 4), -1):
        try:
            data[:end].decode("utf-8")
        except UnicodeDecodeError:
            continue
        return data[:end]
    return data


class SpeculativeDecoding:
    """Answer `request` with the verifier's tokens, drafted by the drafter. Sessions are opened by
    `open_session(member, prompt, role)` (a strategy passes `RunContext.step_session`, which bounds and
    records them); a drafter whose session fails is dropped, a verifier's failure raises. With
    `draft_vocab`, the drafter only proposes its first `draft_vocab` token ids and its end of sequence
    (`StepSession.narrow`): exact all the same, since the verifier checks every token."""

    def __init__(
        self,
        drafter: Member,
        verifier: Member,
        request: Request,
        schedule: DraftSchedule,
        open_session: Callable[[Member, str, str], StepSession],
        draft_vocab: int | None = None,
    ):
        self.alignment = pair_alignment(drafter, verifier)
        self.drafter_member, self.verifier = drafter, verifier
        self.request = request
        self.params = request.params
        self.schedule = schedule
        self.generator = generator_for(self.params, torch.device("cpu"))
        verifier_eos: list[int] = verifier.eos_ids()  # type: ignore[attr-defined]
        self.eos = set(verifier_eos)
        tokenizer: Any = verifier.tokenizer  # type: ignore[attr-defined]
        self.assembler = TextAssembler(
            lambda ids: tokenizer.decode(ids, skip_special_tokens=True),
            verifier.stop_strings(request),
            request.prefill,
        )
        self.outcome = SpeculativeOutcome()
        self.ids: list[int] = []  # the answer in the verifier's ids
        self.cancelled = threading.Event()
        self.session = open_session(verifier, verifier.format_prompt(request), "verify")
        _require_rewind(self.session, verifier)
        prompt = len(self.session.token_ids(0))
        window = verifier.context_window
        self.max_new = min(self.params.max_tokens, window - prompt) if window else self.params.max_tokens
        session, error = self._open_drafter(drafter, open_session)
        self.drafter = _Drafter(drafter, self.alignment, verifier_eos, session, error)
        if session is not None and draft_vocab is not None and draft_vocab < session.vocab_size:
            session.narrow([*range(draft_vocab), *sorted(self.drafter.stop)])
        self.pending: list[int] = []  # the verifier's last token, chosen but not yet read by it
        self.active = True

    def _open_drafter(
        self, drafter: Member, open_session: Callable[[Member, str, str], StepSession]
    ) -> tuple[StepSession | None, str | None]:
        try:
            session = open_session(drafter, drafter.format_prompt(self.request), "draft")
        except Exception as err:
            return None, f"{type(err).__name__}: {err}"
        try:
            _require_rewind(session, drafter)
        except CapabilityError:
            self.session.close()
            raise
        return session, None

    def steps(self) -> Iterator[str]:
        """Decode to the end; yield the new text of each round (possibly "")."""
        outcome = self.outcome
        while self.active and not self.cancelled.is_set():
            k = min(self.schedule.current, self.max_new - outcome.n_tokens - 1)
            start = time.perf_counter()
            draft, probs = self.drafter.draft(k, self.schedule, self.params, self.generator)
            checked = time.perf_counter()
            kept, token = self._verify(draft, probs)
            outcome.draft_s += checked - start
            outcome.verify_s += time.perf_counter() - checked
            outcome.rounds += 1
            outcome.drafted += len(draft)
            outcome.accepted += kept
            self.schedule.update(len(draft), kept)
            text = "".join(self._take(t) for t in [*draft[:kept], token])
            if self.active:
                start = time.perf_counter()
                self.drafter.sync(draft[:kept], token)
                outcome.draft_s += time.perf_counter() - start
            yield text
        outcome.drafter_error = self.drafter.error
        tail = self.assembler.finish()
        outcome.text = self.assembler.text
        if tail:
            yield tail

    def _verify(self, draft: list[int], probs: list[torch.Tensor] | None) -> tuple[int, int]:
        """Feed the verifier its pending token and the draft in one pass; keep what it agrees with, take the
        rest back. Returns (kept drafts, the verifier's next token)."""
        feed = [*self.pending, *draft]
        dists: list[torch.Tensor] = [] if self.pending else [self.session.logprobs()[0]]
        if feed:
            dists.extend(self.session.advance_positions([feed])[0])
        kept, token = accept_draft(dists, draft, probs, self.params, self.generator)
        if len(draft) > kept:
            self.session.rewind([len(draft) - kept])
        self.pending = [token]
        return kept, token

    def _take(self, token: int) -> str:
        """Book one answer token; return its new text. Ends the answer at EOS, a stop string or the limit."""
        outcome = self.outcome
        if not self.active:
            return ""
        if token in self.eos:
            self.active = False
            outcome.finish_reason = "stop"
            return ""
        outcome.n_tokens += 1
        self.ids.append(token)
        text = self.assembler.add(token)
        if self.assembler.stopped:
            self.active = False
            outcome.finish_reason = "stop"
        elif outcome.n_tokens >= self.max_new:
            self.active = False
            outcome.finish_reason = "length"
        return text

    def run(self) -> SpeculativeOutcome:
        for _ in self.steps():
            pass
        return self.outcome

    def close(self) -> None:
        self.drafter.close()
        self.session.close()
