"""Perplexity of texts under members, per character so members with different tokenizers compare fairly
(a 262k vocabulary spends fewer, individually less likely tokens on the same text than a 49k one)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from ensemble_core.members.base import Member
from ensemble_core.run_context import RunContext


async def prompt_perplexities(
    ctx: RunContext, members: Sequence[Member], texts: Sequence[str], role: str = "perplexity"
) -> dict[str, list[float]]:
    """member name -> the perplexity per character of each text (raw text, no chat template; lower is
    better), the members scoring concurrently; a member that fails raises its `MemberError`."""
    found = await asyncio.gather(*(ctx.score(m, [("", text) for text in texts], role=role) for m in members))
    return {m.name: [s.perplexity() for s in scores] for m, scores in zip(members, found, strict=True)}
