"""Per-choice log-likelihoods for multiple-choice items, with each prompt encoded once per member.

A local `HFMember` scores with `HFMember.score_shared`: the prompts of a batch of items run once, their KV
cache is repeated for each choice, and only the choices' tokens run after it (and the output layer runs only
where a choice token is predicted, unless the prompt's own perplexity is wanted). Other members with the
score capability fall back to `member.score` on all choices of a batch at once. Both paths give the same
numbers (tests check it); `llm-ensemble bench` measures the speed-up."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence

from pydantic import BaseModel, ConfigDict

from ensemble_core.cpu_time import cpu_clock
from ensemble_core.eval.items import ChoiceItem
from ensemble_core.members.base import Capability, Member
from ensemble_core.members.hf import HFMember


class ChoiceScores(BaseModel):
    """One member's view of one item: summed log-probability and length of each choice, the prompt's own
    log-probability (for perplexity weights), tokens processed and the (batch-amortised) wall and CPU
    seconds spent."""

    model_config = ConfigDict(extra="forbid")

    logprobs: list[float]
    n_chars: list[int]
    n_bytes: list[int]
    n_tokens: list[int]
    prompt_logprob: float | None = None
    prompt_bytes: int = 0
    tokens: int = 0
    latency_s: float = 0.0
    cpu_s: float = 0.0

    def normalised(self, norm: str) -> list[float]:
        """Log-likelihood per character ("chars"), per byte ("bytes"), or the raw sum ("none")."""
        if norm == "none":
            return list(self.logprobs)
        lengths = self.n_chars if norm == "chars" else self.n_bytes
        return [lp / max(n, 1) for lp, n in zip(self.logprobs, lengths, strict=True)]

    def prediction(self, norm: str) -> int:
        scores = self.normalised(norm)
        return max(range(len(scores)), key=scores.__getitem__)

    @property
    def prompt_nll_per_byte(self) -> float | None:
        """How surprising the prompt is to this member, comparable across tokenizers (nats per byte)."""
        if self.prompt_logprob is None or not self.prompt_bytes:
            return None
        return -self.prompt_logprob / self.prompt_bytes


def score_items(
    member: Member,
    items: Sequence[ChoiceItem],
    *,
    batch_choices: int = 4,
    shared_prompt: bool = True,
    with_prompt: bool = True,
) -> Iterator[tuple[ChoiceItem, ChoiceScores]]:
    """Yield each item with `member`'s choice scores, batching items until about `batch_choices` choices
    (small batches: on a CPU the padding of longer batches costs more than batching saves).
    `with_prompt` also scores the prompt itself (needed for perplexity weights; costs the output layer on
    the prompt's tokens once)."""
    member.require(Capability.SCORE, "choice scoring")
    for batch in _batches(items, batch_choices):
        start, start_cpu = time.perf_counter(), cpu_clock()
        groups = [g for item in batch for g in item.groups()]
        if shared_prompt and isinstance(member, HFMember):
            scored = _shared_prompt_scores(member, groups, with_prompt)
        else:
            scored = _flat_scores(member, groups, with_prompt)
        wall = (time.perf_counter() - start) / len(batch)
        cpu = (cpu_clock() - start_cpu) / len(batch)
        position = 0
        for item in batch:
            n = len(item.groups())
            yield item, _combine(item, scored[position : position + n], wall, cpu)
            position += n


def _batches(items: Sequence[ChoiceItem], batch_choices: int) -> Iterator[list[ChoiceItem]]:
    batch: list[ChoiceItem] = []
    size = 0
    for item in items:
        batch.append(item)
        size += len(item.choices)
        if size >= batch_choices:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


_GroupScore = tuple[
    float | None, int, list[tuple[float, int]]
]  # prompt logprob, tokens processed, (lp, n) per choice


def _combine(item: ChoiceItem, groups: list[_GroupScore], latency_s: float, cpu_s: float) -> ChoiceScores:
    texts = item.scored_texts()
    pairs = [pair for _, _, conts in groups for pair in conts]
    prompt_logprob, _, _ = groups[0]
    prompt = item.groups()[0][0]
    return ChoiceScores(
        logprobs=[lp for lp, _ in pairs],
        n_chars=[len(t) for t in texts],
        n_bytes=[len(t.encode("utf-8")) for t in texts],
        n_tokens=[n for _, n in pairs],
        prompt_logprob=prompt_logprob if len(groups) == 1 else None,
        prompt_bytes=len(prompt.encode("utf-8")),
        tokens=sum(tokens for _, tokens, _ in groups),
        latency_s=latency_s,
        cpu_s=cpu_s,
    )


def _flat_scores(member: Member, groups: list[tuple[str, list[str]]], with_prompt: bool) -> list[_GroupScore]:
    """Any scoring member: every (prompt, choice) pair in one `score` call (plus each prompt's own score)."""
    pairs = [(prompt, c) for prompt, conts in groups for c in conts]
    prompt_pairs = [("", prompt) for prompt, _ in groups] if with_prompt else []
    scores = iter(member.score(pairs + prompt_pairs))
    choice_scores = [[next(scores) for _ in conts] for _, conts in groups]
    out: list[_GroupScore] = []
    for conts in choice_scores:
        prompt_score = next(scores) if with_prompt else None
        prompt_logprob = prompt_score.sum_logprob if prompt_score else None
        out.append(
            (prompt_logprob, sum(s.n_tokens for s in conts), [(s.sum_logprob, s.n_tokens) for s in conts])
        )
    return out


def _shared_prompt_scores(
    member: HFMember, groups: list[tuple[str, list[str]]], with_prompt: bool
) -> list[_GroupScore]:
    """HF members: `score_shared` (each prompt once; tokens counted as prompt + choices)."""
    out: list[_GroupScore] = []
    for (prompt, _), (own, scored) in zip(
        groups, member.score_shared(groups, with_prompt=with_prompt), strict=True
    ):
        tokens = len(member.encode_text(prompt)) + sum(s.n_tokens for s in scored)
        out.append((own.sum_logprob if own else None, tokens, [(s.sum_logprob, s.n_tokens) for s in scored]))
    return out
