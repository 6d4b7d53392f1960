"""Per-choice log-likelihoods for multiple-choice items, with each prompt encoded once per member.

For a local `HFMember` the prompts of a batch of items run once (left-padded, logits only at the last
position), their KV cache is repeated for each choice, and only the choices' tokens run after it: the prompt
is not re-encoded per choice and the (large) output layer runs only where a choice token is predicted. Other
members with the score capability fall back to `member.score` on all choices of a batch at once. The two
paths give the same numbers (tests check it); `llm-ensemble bench` measures the speed-up."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence

import torch
from pydantic import BaseModel, ConfigDict
from transformers import DynamicCache

from ensemble_core.errors import ContextWindowError
from ensemble_core.eval.items import ChoiceItem
from ensemble_core.members.base import Capability, Member


class ChoiceScores(BaseModel):
    """One member's view of one item: summed log-probability and length of each choice, the prompt's own
    log-probability (for perplexity weights), tokens processed and the (batch-amortised) seconds spent."""

    model_config = ConfigDict(extra="forbid")

    logprobs: list[float]
    n_chars: list[int]
    n_bytes: list[int]
    n_tokens: list[int]
    prompt_logprob: float | None = None
    prompt_bytes: int = 0
    tokens: int = 0
    latency_s: float = 0.0

    def normalised(self, norm: str) -> list[float]:
        """Log-likelihood per character ("chars"), per byte ("bytes"), or the raw sum ("none")."""
        if norm == "none":
            return list(self.logprobs)
        lengths = self.n_chars if norm == "chars" else self.n_bytes
        return [lp / max(n, 1) for lp, n in zip(self.logprobs, lengths)]

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
    batch_choices: int = 16,
    shared_prompt: bool = True,
    with_prompt: bool = True,
) -> Iterator[tuple[ChoiceItem, ChoiceScores]]:
    """Yield each item with `member`'s choice scores, batching items until about `batch_choices` choices.
    `with_prompt` also scores the prompt itself (needed for perplexity weights; costs the output layer on
    the prompt's tokens once)."""
    member.require(Capability.SCORE, "choice scoring")
    for batch in _batches(items, batch_choices):
        start = time.perf_counter()
        groups = [g for item in batch for g in item.groups()]
        use_shared = shared_prompt and hasattr(member, "model") and hasattr(member, "tokenizer")
        scored = (
            _shared_prompt_scores(member, groups, with_prompt)
            if use_shared
            else _flat_scores(member, groups, with_prompt)
        )
        share = (time.perf_counter() - start) / len(batch)
        position = 0
        for item in batch:
            n = len(item.groups())
            yield item, _combine(item, scored[position : position + n], share)
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


_GroupScore = tuple[float | None, int, list[tuple[float, int]]]  # prompt logprob, tokens processed, (lp, n) per choice


def _combine(item: ChoiceItem, groups: list[_GroupScore], latency_s: float) -> ChoiceScores:
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
        out.append((prompt_logprob, sum(s.n_tokens for s in conts), [(s.sum_logprob, s.n_tokens) for s in conts]))
    return out


def _shared_prompt_scores(
    member: Member, groups: list[tuple[str, list[str]]], with_prompt: bool
) -> list[_GroupScore]:
    """HF members: prompts once (their KV cache shared by their choices), then only the choice tokens."""
    model, tok = member.model, member.tokenizer  # type: ignore[attr-defined]
    device = model.device
    bos, pad = member._bos_id(), member._pad_id()  # type: ignore[attr-defined]
    prompts = [(tok(p, add_special_tokens=True)["input_ids"] if p else []) or [bos] for p, _ in groups]
    targets = [[tok(c, add_special_tokens=False)["input_ids"] for c in conts] for _, conts in groups]
    window = member.context_window
    longest = max(len(p) + max((len(t) for t in ts), default=0) for p, ts in zip(prompts, targets))
    if window is not None and longest > window:
        raise ContextWindowError(member.name, longest, window)

    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.tensor(p)
        mask[i, width - len(p) :] = 1
    ids, mask = ids.to(device), mask.to(device)
    cache = DynamicCache(config=model.config)
    with torch.inference_mode():
        out = model(
            input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
            past_key_values=cache, use_cache=True, logits_to_keep=0 if with_prompt else 1,
        )
        logits = out.logits.float()
        last = logits[:, -1]
        prompt_sums: list[float | None] = (
            (_token_logprobs(logits[:, :-1], ids[:, 1:]) * mask[:, 1:]).sum(-1).tolist()
            if with_prompt
            else [None] * len(prompts)
        )

        rows = [g for g, ts in enumerate(targets) for _ in ts]
        flat = [t for ts in targets for t in ts]
        span = max(1, max(len(t) for t in flat))
        cont_ids = torch.full((len(flat), span), pad, dtype=torch.long)
        cont_mask = torch.zeros((len(flat), span), dtype=torch.long)
        for r, t in enumerate(flat):
            cont_ids[r, : len(t)] = torch.tensor(t, dtype=torch.long)
            cont_mask[r, : len(t)] = 1
        cont_ids, cont_mask = cont_ids.to(device), cont_mask.to(device)
        index = torch.tensor(rows, device=device)
        cache.batch_select_indices(index)
        lengths = mask.sum(-1)[index]
        out2 = model(
            input_ids=cont_ids,
            attention_mask=torch.cat([mask[index], cont_mask], dim=1),
            position_ids=lengths[:, None] + torch.arange(span, device=device)[None, :],
            past_key_values=cache, use_cache=True,
        )
        # The first choice token is predicted by the prompt's last position, the rest by the choice's own.
        predicting = torch.cat([last[index][:, None], out2.logits[:, :-1].float()], dim=1)
        choice_lp = (_token_logprobs(predicting, cont_ids) * cont_mask).sum(-1).tolist()

    out_groups: list[_GroupScore] = []
    position = 0
    for g, (p, ts) in enumerate(zip(prompts, targets)):
        conts = [(choice_lp[position + k], len(t)) for k, t in enumerate(ts)]
        position += len(ts)
        out_groups.append((prompt_sums[g], len(p) + sum(len(t) for t in ts), conts))
    return out_groups


def _token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[target] per position, without materialising the whole log-softmax."""
    return logits.gather(-1, targets[..., None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)
