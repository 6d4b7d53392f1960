"""Prompt log-probabilities from a server's `/v1/completions` with `echo` and `logprobs`, read without
trusting their alignment.

A correct server reports at position i the log-probability of token i given the tokens before it, and at
`top_logprobs[i]` the top of the distribution that predicted token i. Some servers are off by one:
llama-cpp-python 0.3 (for models whose prompt has no BOS token) reports at position i the distribution that
predicts token i+1, so `token_logprobs[i]` is log p(token i | tokens up to and including i), which means
nothing. `detect_alignment` tells the two apart on a probe text whose every next token is obvious: under the
right reading the actual tokens are the argmax of the distributions that predict them, under the wrong one
they almost never are. `continuation_logprob` then reads a continuation's log-probabilities the detected way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict

#: A text any language model continues with certainty after its first few tokens; short, because some
#: servers (llama-cpp-python) sort the whole vocabulary in Python for every position they report.
PROBE_TEXT = ", ".join(str(i) for i in range(1, 13))
#: Top log-probabilities asked for per position by the probe (the OpenAI legacy API allows up to 5).
PROBE_TOP_K = 5
#: Share of probe positions that must agree with one reading for it to count as that server's alignment.
MIN_AGREEMENT = 0.6


class EchoAlignment(str, Enum):
    """How a server lines up prompt log-probabilities with the prompt's tokens."""

    ALIGNED = "aligned"  # position i: the distribution that predicted token i (the OpenAI convention)
    SHIFTED = "shifted"  # position i: the distribution that predicts token i+1 (llama-cpp-python 0.3)


class EchoLogprobs(BaseModel):
    """The `logprobs` of one echoed completion choice: tokens, their character offsets, log-probabilities."""

    model_config = ConfigDict(extra="ignore")

    tokens: list[str]
    text_offset: list[int]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None] | None = None

    @classmethod
    def from_response(cls, logprobs: Any) -> EchoLogprobs:
        """From an openai `CompletionChoice.logprobs` (or its dict); missing or short fields: ValueError."""
        data = logprobs.model_dump() if hasattr(logprobs, "model_dump") else logprobs
        if not data or not data.get("tokens") or data.get("token_logprobs") is None:
            raise ValueError(
                "the response carries no prompt log-probabilities (echo with logprobs is ignored)"
            )
        parsed = cls.model_validate(data)
        if not (len(parsed.tokens) == len(parsed.text_offset) == len(parsed.token_logprobs)):
            raise ValueError("the response's tokens, text_offset and token_logprobs differ in length")
        return parsed

    def top(self, i: int) -> dict[str, float] | None:
        if self.top_logprobs is None or i < 0 or i >= len(self.top_logprobs):
            return None
        return self.top_logprobs[i] or None

    def span(self, start_char: int, end_char: int) -> range:
        """Indices of the tokens that hold any character of text[start_char:end_char] (the echoed text may be
        followed by generated tokens, which are left out)."""
        ends = [*self.text_offset[1:], math.inf]
        first = next((i for i, end in enumerate(ends) if end > start_char), len(self.tokens))
        last = next((i for i, start in enumerate(self.text_offset) if start >= end_char), len(self.tokens))
        return range(first, max(first, last))


class AlignmentCheck(BaseModel):
    """What the probe found: the alignment (None when neither reading fits) and the evidence, in words."""

    alignment: EchoAlignment | None
    reason: str


def detect_alignment(logprobs: EchoLogprobs, text: str = PROBE_TEXT) -> AlignmentCheck:
    """Which reading makes the probe's tokens the argmax of the distribution that predicts them."""
    positions = list(logprobs.span(0, len(text)))[2:]  # the first two tokens are not predictable
    if logprobs.top_logprobs is None:
        return _check_without_top(logprobs, positions)
    aligned = shifted = counted = 0
    for i in positions:
        own, previous = logprobs.top(i), logprobs.top(i - 1)
        if own is None or previous is None:
            continue
        counted += 1
        aligned += _argmax(own) == logprobs.tokens[i]
        shifted += _argmax(previous) == logprobs.tokens[i]
    if not counted:
        return AlignmentCheck(
            alignment=None, reason="the server returned no top log-probabilities for the probe"
        )
    evidence = (
        f"{aligned}/{counted} probe tokens fit the aligned reading, {shifted}/{counted} the shifted one"
    )
    for alignment, hits, other in (
        (EchoAlignment.ALIGNED, aligned, shifted),
        (EchoAlignment.SHIFTED, shifted, aligned),
    ):
        if hits >= MIN_AGREEMENT * counted and hits > other:
            return AlignmentCheck(alignment=alignment, reason=evidence)
    return AlignmentCheck(
        alignment=None, reason=f"prompt log-probabilities fit neither alignment ({evidence})"
    )


def _check_without_top(logprobs: EchoLogprobs, positions: Sequence[int]) -> AlignmentCheck:
    """Without top log-probabilities only the aligned reading can be confirmed: the probe's tokens are then
    near-certain (a shifted server gives each token's probability of repeating itself, which is tiny)."""
    values = [v for v in (logprobs.token_logprobs[i] for i in positions) if v is not None]
    if not values:
        return AlignmentCheck(alignment=None, reason="the server returned no log-probabilities for the probe")
    mean = sum(values) / len(values)
    if mean > math.log(0.5):
        return AlignmentCheck(
            alignment=EchoAlignment.ALIGNED, reason=f"probe tokens have mean log-probability {mean:.2f}"
        )
    return AlignmentCheck(
        alignment=None,
        reason=f"probe tokens have mean log-probability {mean:.2f}: too low for a correct alignment, and "
        "without top log-probabilities a shifted one cannot be read",
    )


class MissingLogprobError(ValueError):
    """A continuation token whose log-probability the response does not hold."""


def continuation_logprobs(
    logprobs: EchoLogprobs, prompt_chars: int, total_chars: int, alignment: EchoAlignment
) -> list[float]:
    """Log-probability of each token of text[prompt_chars:total_chars] given everything before it.

    A token that straddles the prompt's end counts as part of the continuation. Shifted servers only reveal
    a token's log-probability when it is among the top log-probabilities of the position before it.
    """
    indices = logprobs.span(prompt_chars, total_chars)
    if not indices:
        raise MissingLogprobError("the continuation has no tokens")
    values = []
    for i in indices:
        token = logprobs.tokens[i]
        if alignment is EchoAlignment.ALIGNED:
            value = logprobs.token_logprobs[i]
        else:
            value = (logprobs.top(i - 1) or {}).get(token)
        if value is None:
            where = "the first token of the text" if i == 0 else f"token {i} ({token!r})"
            raise MissingLogprobError(f"the server gave no log-probability for {where}")
        values.append(float(value))
    return values


def _argmax(top: dict[str, float]) -> str:
    return max(top, key=top.__getitem__)
