"""Perplexity of texts under members, per character so members with different tokenizers compare fairly
(a 262k vocabulary spends fewer, individually less likely tokens on the same text than a 49k one)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from ensemble_core.members.base import Member


def prompt_perplexities(members: Sequence[Member], texts: Sequence[str]) -> dict[str, list[float]]:
    """member name -> the perplexity per character of each text (raw text, no chat template; lower is
    better)."""
    out: dict[str, list[float]] = {}
    for member in members:
        scores = member.score([("", text) for text in texts])
        out[member.name] = [math.exp(-s.sum_logprob / max(s.n_chars, 1)) for s in scores]
    return out
