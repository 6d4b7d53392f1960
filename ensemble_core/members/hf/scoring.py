"""Scoring continuations with a local model: the log-probability of each continuation after its prompt, in
right-padded batches (`score_pairs`), or with each prompt run once for all its continuations
(`score_shared`). Both give the same numbers, the tokens read and the CPU seconds spent."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import DynamicCache

from ensemble_core.cpu_time import cpu_clock
from ensemble_core.members.hf.cache import cache_argument
from ensemble_core.members.hf.model import LoadedModel
from ensemble_core.members.hf.tensors import padded, token_logprobs
from ensemble_core.types import ContinuationScore

SharedScores = list[tuple[ContinuationScore | None, list[ContinuationScore]]]


def score_pairs(
    lm: LoadedModel, pairs: Sequence[tuple[str, str]], batch_size: int
) -> list[ContinuationScore]:
    """Sum log-probability of each continuation after its prompt (raw text), `batch_size` pairs a batch."""
    results: list[ContinuationScore] = []
    for start in range(0, len(pairs), batch_size):
        results.extend(_score_batch(lm, pairs[start : start + batch_size]))
    return results


def _score_batch(lm: LoadedModel, pairs: Sequence[tuple[str, str]]) -> list[ContinuationScore]:
    started = cpu_clock()
    rows: list[tuple[list[int], int]] = []
    for prompt, continuation in pairs:
        context = (lm.encode_text(prompt) if prompt else []) or [lm.bos_id()]
        rows.append((context + lm.encode_continuation(continuation), len(context)))
    lm.check_fits(max(len(ids) for ids, _ in rows))
    input_ids, mask = padded([ids for ids, _ in rows], lm.pad_id(), lm.device, side="right")
    with torch.inference_mode():
        logits = lm.model(input_ids=input_ids, attention_mask=mask).logits
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    predicted = []
    for i, (ids, n_context) in enumerate(rows):
        targets = torch.tensor(ids[n_context:], device=logprobs.device)
        predicted.append(logprobs[i, n_context - 1 : len(ids) - 1].gather(-1, targets[:, None]).squeeze(-1))
    cpu = (cpu_clock() - started) / len(rows)
    return [
        ContinuationScore(
            sum_logprob=float(p.sum()),
            n_tokens=len(ids) - n_context,
            n_chars=len(continuation),
            prompt_tokens=n_context,
            cpu_s=cpu,
        )
        for p, (ids, n_context), (_, continuation) in zip(predicted, rows, pairs, strict=True)
    ]


def score_shared(
    lm: LoadedModel, groups: Sequence[tuple[str, Sequence[str]]], *, with_prompt: bool = False
) -> SharedScores:
    """Score several continuations of each prompt, running each prompt once: the prompts go through the
    model in one left-padded batch, their KV cache is repeated for each continuation, and only the
    continuations' tokens run after it. Same numbers as `score_pairs` on every (prompt, continuation) pair.
    Returns per group the prompt's own score (with `with_prompt`; its first token is not scored) and the
    continuations' scores."""
    started = cpu_clock()
    prompts = [(lm.encode_text(p) if p else []) or [lm.bos_id()] for p, _ in groups]
    targets = [[lm.encode_continuation(c) for c in conts] for _, conts in groups]
    lm.check_fits(
        max(len(p) + max((len(t) for t in ts), default=0) for p, ts in zip(prompts, targets, strict=True))
    )
    ids, mask = padded(prompts, lm.pad_id(), lm.device, side="left")
    model = lm.model
    cache = DynamicCache(config=model.config)
    rows = [g for g, ts in enumerate(targets) for _ in ts]
    cont_ids, cont_mask = padded(
        [t for ts in targets for t in ts], lm.pad_id(), lm.device, "right", min_width=1
    )
    index = torch.tensor(rows, device=lm.device)
    with torch.inference_mode():
        out = model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
            **cache_argument(model, cache),
            use_cache=True,
            logits_to_keep=0 if with_prompt else 1,
        )
        logits = out.logits.float()
        prompt_sums = (
            (token_logprobs(logits[:, :-1], ids[:, 1:]) * mask[:, 1:]).sum(-1).tolist()
            if with_prompt
            else [0.0] * len(prompts)
        )
        cache.batch_select_indices(index)
        out = model(
            input_ids=cont_ids,
            attention_mask=torch.cat([mask[index], cont_mask], dim=1),
            position_ids=mask.sum(-1)[index][:, None] + torch.arange(cont_ids.shape[1], device=lm.device),
            **cache_argument(model, cache),
            use_cache=True,
        )
        # A continuation's first token is predicted at the prompt's last position, the rest at its own.
        predicting = torch.cat([logits[index, -1:], out.logits[:, :-1].float()], dim=1)
        sums = (token_logprobs(predicting, cont_ids) * cont_mask).sum(-1).tolist()
    cpu = (cpu_clock() - started) / max(len(rows), 1)
    results: SharedScores = []
    position = 0
    for g, ((prompt, conts), ts) in enumerate(zip(groups, targets, strict=True)):
        scored = [
            ContinuationScore(
                sum_logprob=sums[position + k],
                n_tokens=len(t),
                n_chars=len(c),
                prompt_tokens=len(prompts[g]),
                cpu_s=cpu,
            )
            for k, (t, c) in enumerate(zip(ts, conts, strict=True))
        ]
        position += len(ts)
        own = ContinuationScore(sum_logprob=prompt_sums[g], n_tokens=len(prompts[g]) - 1, n_chars=len(prompt))
        results.append((own if with_prompt else None, scored))
    return results
