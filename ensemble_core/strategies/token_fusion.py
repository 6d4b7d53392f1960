"""`TokenFusion`: mix the members' next-token distributions at every step (PackLLM, GaC).

Every member steps on its own KV cache; the distributions are mixed with weights (uniform, fixed, or PackLLM's
prompt-perplexity weights), one token is chosen and every member reads it in its own ids. Members with
different tokenizers meet in a union vocabulary (`ensemble_core.alignment`). Several requests fuse together as
rows of one batch (`arun_batch`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, field_validator

from ensemble_core.alignment import Alignment
from ensemble_core.asyncio_bridge import to_thread
from ensemble_core.fused_decoding import member_alignment
from ensemble_core.members.base import Member
from ensemble_core.mixing import Mixer, Mixing
from ensemble_core.run_context import RunContext
from ensemble_core.scoring.packllm import FusedPromptPerplexity, opt_weights, sim_weights
from ensemble_core.scoring.perplexity import prompt_perplexities
from ensemble_core.strategies.fused_strategy import FusedDecodingStrategy, require_known
from ensemble_core.types import Request

WeightMethod = Literal["uniform", "packllm-sim", "packllm-opt"]


class TokenFusion(FusedDecodingStrategy):
    """Fuse the members token by token: mixed next-token distributions, one shared answer."""

    name: ClassVar[str] = "token-fusion"
    summary: ClassVar[str] = (
        "mix the members' next-token distributions at every step (same or different tokenizers)"
    )
    paper: ClassVar[str | None] = (
        "Mavromatis et al. 2024, Pack of LLMs: Model Fusion at Test-Time via Perplexity Optimization "
        "(PackLLM); "
        "Yu et al. 2024, Breaking the Ceiling of the LLM Community by Treating Token Generation as a "
        "Classification for Ensembling (GaC)"
    )
    members_doc: ClassVar[str] = "names of the members to fuse; default: all"

    weights: WeightMethod | dict[str, float] = Field(
        default="uniform",
        description="'uniform', {member: weight} (normalised; unnamed members get 0), 'packllm-sim' "
        "(softmax(-log perplexity of the prompt / tau), per request) or 'packllm-opt' (greedy search for the "
        "weights that minimise the fused perplexity of the prompt, per request)",
    )
    mixing: Mixing = Field(
        default="prob",
        description="'prob': mix probabilities (mixture); 'logit': mix log-probabilities (product, PackLLM's "
        "choice)",
    )
    tau: float = Field(
        default=0.1,
        gt=0,
        description="packllm-sim temperature: lower favours the least surprised member more",
    )
    opt_grid: int = Field(
        default=11, ge=2, description="packllm-opt: grid points for each member's share in [0, 1]"
    )

    @field_validator("weights")
    @classmethod
    def _valid_weights(cls, weights: WeightMethod | dict[str, float]) -> WeightMethod | dict[str, float]:
        if isinstance(weights, dict):
            if any(w < 0 for w in weights.values()):
                raise ValueError("fixed weights must be >= 0")
            if not sum(weights.values()) > 0:
                raise ValueError("fixed weights must not all be 0")
        return weights

    def check(self, members: Mapping[str, Member]) -> None:
        super().check(members)
        if isinstance(self.weights, dict):
            used = [m.name for m in self.members_used(list(members.values()))]
            require_known("token-fusion.weights", self.weights, used, "fused member")

    # weights
    # ------------------------------------------------------------------------------------------------------
    async def request_weights(
        self, ctxs: Sequence[RunContext], members: Sequence[Member], requests: Sequence[Request]
    ) -> tuple[torch.Tensor, str | None]:
        """[requests, members] weights, each row summing to 1, by the configured method; if PackLLM's scoring
        fails, uniform weights and a note saying why (the trace keeps it)."""
        n = len(members)
        uniform = torch.full((len(requests), n), 1.0 / n)
        if self.weights == "uniform":
            return uniform, None
        if isinstance(self.weights, dict):
            fixed = torch.tensor([float(self.weights.get(m.name, 0.0)) for m in members])
            return (fixed / fixed.sum()).expand(len(requests), n).clone(), None
        texts = [prompt_text(r) for r in requests]
        try:
            if self.weights == "packllm-sim":
                found = await asyncio.gather(
                    *(
                        prompt_perplexities(ctx, members, [text], role="weigh")
                        for ctx, text in zip(ctxs, texts, strict=True)
                    )
                )
                rows = [sim_weights([ppl[m.name][0] for m in members], self.tau) for ppl in found]
            else:
                mixer = Mixer(member_alignment(members), self.mixing)

                def weigh(ctx: RunContext, text: str) -> list[float]:
                    objective = FusedPromptPerplexity(
                        members, mixer, text, lambda m, p: ctx.step_session(m, p, role="weigh")
                    )
                    return opt_weights(objective, n, self.opt_grid)

                rows = [await to_thread(weigh, ctx, text) for ctx, text in zip(ctxs, texts, strict=True)]
        except Exception as err:
            return (
                uniform,
                f"{self.weights} weights failed ({type(err).__name__}: {err}); used uniform weights",
            )
        return torch.tensor(rows, dtype=torch.float32), None

    def make_mixer(self, alignment: Alignment, members: Sequence[Member]) -> Mixer:
        return Mixer(alignment, self.mixing)

    def describe(self, members: Sequence[Member], weights: list[float]) -> tuple[str, dict[str, Any]]:
        method = self.weights if isinstance(self.weights, str) else "fixed"
        names = ", ".join(f"{m.name} {w:.2f}" for m, w in zip(members, weights, strict=True))
        reason = f"token fusion ({method} weights, {self.mixing} mixing: {names})"
        return reason, {"weight_method": method, "mixing": self.mixing}


def prompt_text(request: Request) -> str:
    """The text PackLLM weighs members on: the conversation's message contents, in order."""
    return "\n".join(m.content for m in request.messages if m.content)
