"""`Contrastive`: contrastive decoding, an expert's next-token log-probabilities minus smaller amateurs',
among the tokens the expert finds plausible.

Amateurs share much of an expert's bias (towards some wording, some answer) without its knowledge, so
subtracting theirs leaves more of what only the expert knows. On scored choices this is the signed
calibrated fit that `llm-ensemble tune` reports as contrastive; it writes this strategy with the fitted
`beta` and shares. The loop is token fusion's (`fused_decoding`), with `mixing.ContrastiveMixer`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from pydantic import Field, field_validator

from ensemble_core.alignment import Alignment
from ensemble_core.errors import ConfigError
from ensemble_core.members.base import Member
from ensemble_core.mixing import ContrastiveMixer, Mixer
from ensemble_core.run_context import RunContext
from ensemble_core.strategies.base import resolve_member
from ensemble_core.strategies.fused_strategy import FusedDecodingStrategy, require_known
from ensemble_core.types import Request


class Contrastive(FusedDecodingStrategy):
    """The expert's answer, each token chosen by (1 + beta) log p_expert - beta log p_amateurs among the
    tokens the expert gives at least `alpha` times its top probability. With beta 0 it is the expert's own
    greedy answer; a failing amateur leaves the others (or the expert alone), a failing expert the amateurs
    fused."""

    name: ClassVar[str] = "contrastive"
    summary: ClassVar[str] = (
        "the expert's next-token log-probabilities minus smaller amateurs', among its plausible tokens"
    )
    paper: ClassVar[str | None] = (
        "Li et al. 2023, Contrastive Decoding: Open-ended Text Generation as Optimization; "
        "O'Brien and Lewis 2023, Contrastive Decoding Improves Reasoning in Large Language Models"
    )
    members_doc: ClassVar[str] = (
        "the amateurs, whose log-probabilities are subtracted; default: every member but the expert"
    )

    expert: str | None = Field(
        default=None, description="the member whose answer it is (the strongest); default: the last member"
    )
    beta: float = Field(
        default=0.5,
        ge=0.0,
        description="how much of the amateurs is subtracted: (1 + beta) log p_expert - beta log p_amateurs",
    )
    alpha: float = Field(
        default=0.1,
        gt=0.0,
        le=1.0,
        description="the plausibility cut: only tokens the expert gives at least alpha times its top "
        "probability are chosen by the contrast",
    )
    shares: dict[str, float] | None = Field(
        default=None,
        description="{amateur: share of beta} (normalised); default: equal shares",
    )

    @field_validator("shares")
    @classmethod
    def _positive_shares(cls, shares: dict[str, float] | None) -> dict[str, float] | None:
        if shares is not None and (any(w < 0 for w in shares.values()) or not sum(shares.values()) > 0):
            raise ValueError("shares must be >= 0 and not all 0")
        return shares

    def default_participants(self, members: Sequence[Member]) -> list[Member]:
        expert = self._expert(members)
        return [m for m in members if m is not expert]

    def role_members(self, members: Sequence[Member]) -> list[Member]:
        return [self._expert(members)]

    def _expert(self, members: Sequence[Member]) -> Member:
        if self.expert is None:
            return members[-1]
        return resolve_member(members, self.expert, "contrastive.expert")

    def check(self, members: Mapping[str, Member]) -> None:
        super().check(members)
        listed = list(members.values())
        amateurs = self.participants(listed)
        expert = self._expert(listed)
        if not amateurs or expert in amateurs:
            raise ConfigError(
                "contrastive: the expert must not be one of the amateurs, and there must be at least one "
                f"amateur (expert {expert.name!r}, amateurs: {', '.join(m.name for m in amateurs) or 'none'})"
            )
        require_known("contrastive.shares", self.shares or {}, [m.name for m in amateurs], "amateur")

    async def request_weights(
        self, ctxs: Sequence[RunContext], members: Sequence[Member], requests: Sequence[Request]
    ) -> tuple[torch.Tensor, str | None]:
        """The same weights for every request: 1 + beta for the expert (last: a role member), -beta times
        its share for each amateur."""
        amateurs = members[:-1]
        raw = [1.0 if self.shares is None else float(self.shares.get(m.name, 0.0)) for m in amateurs]
        total = sum(raw)
        row = [-self.beta * w / total for w in raw] + [1.0 + self.beta]
        return torch.tensor([row] * len(requests), dtype=torch.float32), None

    def make_mixer(self, alignment: Alignment, members: Sequence[Member]) -> Mixer:
        return ContrastiveMixer(alignment, expert=len(members) - 1, alpha=self.alpha)

    def describe(self, members: Sequence[Member], weights: list[float]) -> tuple[str, dict[str, Any]]:
        expert, amateurs = members[-1], members[:-1]
        names = ", ".join(f"{m.name} {w:.2f}" for m, w in zip(amateurs, weights[:-1], strict=True))
        reason = f"contrastive decoding ({expert.name} minus {names}; beta {self.beta}, alpha {self.alpha})"
        return reason, {"expert": expert.name, "beta": self.beta, "alpha": self.alpha}
