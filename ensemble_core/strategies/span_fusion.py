"""`SpanFusion` (Cool-Fusion, SweetSpan): members take turns proposing the next few words of one answer; every
member scores every proposal by perplexity, and the least surprising span is kept and continued by all.

The rounds are `ProposalFusion`'s (strategies/proposal.py), shared with `StepFusion`, which proposes
reasoning steps instead; any members that can continue a partly written answer and score text can be fused.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import ClassVar

from pydantic import Field, model_validator

from ensemble_core.errors import AllMembersFailedError
from ensemble_core.members.base import Capability, Member
from ensemble_core.run_context import RunContext
from ensemble_core.scoring.continuations import score_candidates
from ensemble_core.strategies.base import resolve_member
from ensemble_core.strategies.proposal import Choice, ProposalFusion
from ensemble_core.types import Request

_WORD = re.compile(r"\s*\S+")


def cut_words(text: str, words: int, finished: bool) -> tuple[str, bool]:
    """The first `words` words of `text` with their leading whitespace, ending just before the whitespace that
    starts the next word: a boundary where every tokenizer (byte-level BPE and sentencepiece alike) starts a
    token. A word is only taken once the whitespace after it shows it is whole, unless the member finished.
    Returns (span, complete); complete when the member finished within these words."""
    matches = list(_WORD.finditer(text))
    if finished and len(matches) <= words:
        return text.rstrip(), True
    whole = [m for m in matches[:words] if m.end() < len(text)]
    if not whole:  # a single word longer than the proposal budget: keep it whole rather than stall
        return text, False
    return text[: whole[-1].end()], False


class SpanFusion(ProposalFusion):
    """Every member proposes the next `words` words; every member scores every distinct proposal by perplexity
    given the text so far (its own prompt format); the span with the lowest weighted mean perplexity is kept
    (Cool-Fusion's choice; `weights` weigh members, default equally). Perplexity is per character, so spans of
    different lengths compare fairly and members with different tokenizers are on one scale. When all members
    propose the same span no scoring is needed. Needs members that can generate and score.

    max_tokens counts the kept spans in their proposers' tokens (a cut proposal by its share of characters).
    Known weakness of perplexity selection: text copied from the prompt is least surprising, so with weak
    members a restatement of the question can win over an answer."""

    name: ClassVar[str] = "span-fusion"
    summary: ClassVar[str] = "members propose spans; all members score them by perplexity; the best is kept"
    paper: ClassVar[str | None] = (
        "Liu et al. 2024, Cool-Fusion: Fuse Large Language Models without Training (arXiv:2407.19807); "
        "Xu et al. 2024, Hit the Sweet Spot! Span-Level Ensemble for Large Language Models (arXiv:2409.18583)"
    )
    requires: ClassVar[frozenset[Capability]] = frozenset({Capability.GENERATE, Capability.SCORE})
    piece: ClassVar[str] = "span"

    words: int = Field(default=3, ge=1, le=64, description="words per proposed span")
    span_tokens: int = Field(
        default=8,
        ge=1,
        le=256,
        description="most new tokens a member writes for one proposal (enough for the words)",
    )
    weights: dict[str, float] | None = Field(
        default=None,
        description="member name -> weight of its perplexity in the mean; default: equal weights",
    )

    @model_validator(mode="after")
    def _check_weights(self) -> SpanFusion:
        if self.weights is not None and (
            any(w < 0 for w in self.weights.values()) or not any(self.weights.values())
        ):
            raise ValueError(
                "weights must be >= 0 with at least one above 0, e.g. {'smollm2': 1, 'gemma3': 2}"
            )
        return self

    def check(self, members: Mapping[str, Member]) -> None:
        super().check(members)
        for name in self.weights or {}:
            resolve_member(list(members.values()), name, "span-fusion.weights")

    @property
    def proposal_tokens(self) -> int:
        return self.span_tokens

    def cut(self, text: str, finished: bool, at_start: bool) -> tuple[str, bool]:
        span, complete = cut_words(text, self.words, finished)
        return (span.lstrip() if at_start else span), complete

    async def choose(
        self, ctx: RunContext, request: Request, prefix: str, pieces: Sequence[str], candidates: Sequence[str]
    ) -> Choice:
        scorers = self.participants(list(ctx.members.values()))
        scores = await score_candidates(
            ctx, scorers, request, prefix, candidates, self.weights, role="score span"
        )
        if not scores.combined:
            raise AllMembersFailedError(scores.errors)
        return Choice(scores.best, scores.details())
