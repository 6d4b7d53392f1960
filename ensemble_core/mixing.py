"""Mixing next-token distributions of several members in the union vocabulary, and choosing a token.

`prob` mixes probabilities (a mixture of experts: p = sum_i w_i p_i); `logit` mixes log-probabilities (a
product of experts, PackLLM's choice: p ~ exp(sum_i w_i log p_i)). Members with different tokenizers are first
projected into the union vocabulary of their `Alignment` with one `index_add_` each. Rows whose answer must
keep to a grammar (a tool call, a JSON schema) choose only among the union tokens every constrained member's
grammar allows (`UnionConstraint`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal

import torch
from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper

from ensemble_core.alignment import Alignment
from ensemble_core.members.step import TokenConstraint
from ensemble_core.types import Params

Mixing = Literal["prob", "logit"]

# log of the smallest probability a member is taken to give a token it lacks or rules out (logit mixing):
# finite, so a weight of 0 removes a member exactly instead of giving 0 * -inf = nan.
_LOG_FLOOR = -69.0
# what a token under the plausibility cut loses (contrastive): it ranks under every token above the cut
_BELOW_CUT = -1e4
# a constrained row whose chosen token a member cannot spell validly chooses again, at most this often
_MAX_RETRIES = 64


class Mixer:
    """Mixes the members' log-probabilities ([rows, own vocabulary] each) into scores over the union
    vocabulary."""

    def __init__(self, alignment: Alignment, mixing: Mixing):
        self.alignment = alignment
        self.mixing = mixing

    def _project(self, member: int, probs: torch.Tensor) -> torch.Tensor:
        """Probabilities over a member's vocabulary -> over the union (tokens with equal bytes add up)."""
        size = self.alignment.size
        if self.alignment.identity[member]:
            return (
                probs
                if probs.shape[-1] == size
                else torch.nn.functional.pad(probs, (0, size - probs.shape[-1]))
            )
        index = self.alignment.index(member, probs.device)
        out = torch.zeros((probs.shape[0], size), dtype=probs.dtype, device=probs.device)
        return out.index_add_(1, index, probs)

    def own(self, member: int, logprobs: torch.Tensor) -> torch.Tensor:
        """A member's log-probabilities cut to its tokenizer's ids (models may pad their output layer)."""
        return logprobs[:, : len(self.alignment.tables[member].data)]

    def mix(
        self,
        logprobs: Sequence[torch.Tensor],
        members: Sequence[int],
        weights: torch.Tensor,
        as_log: bool = True,
    ) -> torch.Tensor:
        """Scores [rows, union] of the mixture; `weights` is [rows, len(members)] and sums to 1 per row.
        Log-space, except that `prob` mixing with `as_log=False` returns the probabilities (enough for an
        argmax, and one pass over the union vocabulary cheaper). Members whose weight is 0 in every row are
        skipped."""
        device = logprobs[0].device
        weights = weights.to(device)
        total: torch.Tensor | None = None
        for column, (member, lp) in enumerate(zip(members, logprobs, strict=True)):
            w = weights[:, column : column + 1]
            if not bool((w != 0).any()):
                continue
            lp = self.own(member, lp.to(device))
            if self.mixing == "prob":
                part = self._project(member, lp.exp().mul_(w))
            elif self.alignment.identity[member]:  # its log-probabilities are the union's, as they are
                pad = (0, self.alignment.size - lp.shape[-1])
                part = torch.nn.functional.pad(lp.clamp_min(_LOG_FLOOR), pad, value=_LOG_FLOOR).mul_(w)
            else:
                part = (
                    self._project(member, lp.exp())
                    .clamp_min_(torch.finfo(lp.dtype).tiny)
                    .log_()
                    .clamp_min_(_LOG_FLOOR)
                    * w
                )
            total = part if total is None else total.add_(part)
        assert total is not None, "at least one member has a non-zero weight"
        return total.log_() if self.mixing == "prob" and as_log else total

    def log_space(self, as_log: bool) -> bool:
        """Whether `mix(..., as_log)` returns log-space scores (then a masked token must sink under all)."""
        return as_log or self.mixing == "logit"

    def top(self, member: int, logprobs: torch.Tensor) -> list[int]:
        """Each row's most likely token of one member, as union ids (who agreed with the choice)."""
        best = self.own(member, logprobs).argmax(-1).cpu()
        return self.alignment.to_union[member][best].tolist()

    def union_logprobs(self, member: int, logprobs: torch.Tensor) -> torch.Tensor:
        """A member's log-probabilities [rows, union]; -inf for the union tokens it lacks."""
        lp = self.own(member, logprobs)
        if self.alignment.identity[member]:
            return torch.nn.functional.pad(lp, (0, self.alignment.size - lp.shape[-1]), value=float("-inf"))
        return self._project(member, lp.exp()).log_()


class ContrastiveMixer(Mixer):
    """Contrastive decoding (Li et al. 2023; O'Brien and Lewis 2023): the expert's log-probabilities minus
    the amateurs', (1 + beta) log p_expert - beta * sum_a share_a log p_a, with the weights given as
    [1 + beta, -beta * share_a] per row, among the tokens the expert gives at least `alpha` times its top
    probability (the plausibility cut: what the amateur gets wrong only matters where the expert is sure
    enough). Below the cut every token keeps its place by the expert's own probability, under every plausible
    one, so a grammar that rules out all plausible tokens still gets the expert's best allowed token. Where
    an amateur lacks a union token (it would spell it in several ids), it does not contrast that token. Once
    the expert has failed, the amateurs left are mixed as `logit` token fusion."""

    def __init__(self, alignment: Alignment, expert: int, alpha: float):
        super().__init__(alignment, "logit")
        self.expert = expert
        self.log_alpha = math.log(alpha)

    def mix(
        self,
        logprobs: Sequence[torch.Tensor],
        members: Sequence[int],
        weights: torch.Tensor,
        as_log: bool = True,
    ) -> torch.Tensor:
        if self.expert not in members:
            return super().mix(logprobs, members, weights, as_log)
        device = logprobs[0].device
        weights = weights.to(device)
        column = list(members).index(self.expert)
        expert = self.union_logprobs(self.expert, logprobs[column].to(device))
        total = expert * weights[:, column : column + 1]
        for other, (member, lp) in enumerate(zip(members, logprobs, strict=True)):
            if member == self.expert:
                continue
            amateur = self.union_logprobs(member, lp.to(device))
            total.add_(torch.where(amateur.isneginf(), expert, amateur) * weights[:, other : other + 1])
        plausible = expert >= expert.max(-1, keepdim=True).values + self.log_alpha
        return torch.where(plausible, total, expert + _BELOW_CUT)

    def log_space(self, as_log: bool) -> bool:
        return True


def choose(
    scores: torch.Tensor, params: Sequence[Params], generators: Sequence[torch.Generator | None]
) -> list[int]:
    """One union id per row: the argmax for greedy rows, else a sample after temperature and top-p warping."""
    chosen = scores.argmax(-1).tolist()
    for row, (p, generator) in enumerate(zip(params, generators, strict=True)):
        if p.greedy:
            continue
        probs = sampling_probs(scores[row : row + 1], p)
        chosen[row] = int(torch.multinomial(probs, 1, generator=generator))
    return chosen


def sampling_probs(scores: torch.Tensor, params: Params) -> torch.Tensor:
    """The distribution a sampled row draws from: log-space `scores` [rows, vocab] after temperature and top-p
    warping (as `generate` samples with top_k=0), softmaxed, float32."""
    warpers = LogitsProcessorList([TemperatureLogitsWarper(params.temperature)])
    if params.top_p < 1.0:
        warpers.append(TopPLogitsWarper(params.top_p))
    warped = warpers(None, scores.float())  # type: ignore[arg-type]
    return torch.softmax(warped, dim=-1)


def generator_for(params: Params, device: torch.device) -> torch.Generator | None:
    """A seeded random generator for a sampled row with a seed (reproducible), else None (global RNG)."""
    if params.greedy or params.seed is None:
        return None
    return torch.Generator(device=device).manual_seed(params.seed)


class UnionConstraint:
    """One row's grammar constraints, one per constrained member, over the union vocabulary: a union token
    may be chosen only if its bytes keep every constrained member's answer valid.

    A member's own tokens are checked by its mask in one scatter; a union token it lacks (it must spell the
    bytes in several of its own ids) is let through the mask and checked after it is chosen (`fits`), so the
    cost per step is one mask per member, whatever the size of the union."""

    def __init__(self, alignment: Alignment, constraints: Mapping[int, TokenConstraint]):
        self.alignment = alignment
        self.constraints = dict(constraints)
        self._lacks = {m: torch.tensor(alignment.from_union[m]) < 0 for m in self.constraints}

    def mask(self, alive: Sequence[int]) -> torch.Tensor | None:
        """A bool mask [union] of the tokens the live constrained members allow (None when none of them
        constrains, or when together they allow nothing: a broken constraint does not stall the answer)."""
        allowed: torch.Tensor | None = None
        for m in alive:
            constraint = self.constraints.get(m)
            if constraint is None:
                continue
            own = constraint.allowed()[: len(self.alignment.tables[m].data)]
            part = self._lacks[m].clone()
            part[self.alignment.to_union[m][: own.shape[0]][own]] = True
            allowed = part if allowed is None else allowed.logical_and_(part)
        return allowed if allowed is not None and bool(allowed.any()) else None

    def fits(self, alive: Sequence[int], union_id: int) -> bool:
        """Whether every live constrained member that lacks the token can read its bytes next."""
        return all(
            self.constraints[m].fits(self.alignment.feed(m, union_id))
            for m in alive
            if m in self.constraints and bool(self._lacks[m][union_id])
        )

    def advance(self, member: int, ids: Sequence[int]) -> None:
        """The member read these ids (the chosen token, in its own ids): its grammar state moves on."""
        constraint = self.constraints.get(member)
        if constraint is not None and not constraint.advance(ids):
            del self.constraints[
                member
            ]  # off its grammar (it cannot happen to a masked choice): unconstrained


def choose_constrained(
    scores: torch.Tensor,
    params: Sequence[Params],
    generators: Sequence[torch.Generator | None],
    constraints: Mapping[int, UnionConstraint],
    alive: Sequence[int],
    log_space: bool,
) -> list[int]:
    """`choose`, with each constrained row masked to the tokens its members' grammars allow; a chosen token
    that a member would have to spell in several ids and cannot is ruled out and the row chooses again."""
    floor = float("-inf") if log_space else -1.0
    for row, constraint in constraints.items():
        allowed = constraint.mask(alive)
        if allowed is not None:
            scores[row].masked_fill_(~allowed.to(scores.device), floor)
    picks = choose(scores, params, generators)
    for row, constraint in constraints.items():
        for _ in range(_MAX_RETRIES):
            if constraint.fits(alive, picks[row]):
                break
            scores[row, picks[row]] = floor
            picks[row] = choose(scores[row : row + 1], [params[row]], [generators[row]])[0]
    return picks
