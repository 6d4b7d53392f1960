"""Padding rows of token ids into one batch, and per-token log-probabilities: the tensor plumbing every job
of a local model shares."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch


def padded(
    rows: Sequence[Sequence[int]],
    pad: int,
    device: torch.device,
    side: Literal["left", "right"],
    min_width: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention mask) of shape [rows, width]: each row's ids against the left or right edge, `pad`
    and mask 0 elsewhere. Left padding puts every row's next token in the same column (generation,
    stepping); right padding keeps each row's positions from 0 (scoring)."""
    width = max(min_width, max((len(r) for r in rows), default=0))
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if not row:
            continue
        span = slice(width - len(row), width) if side == "left" else slice(0, len(row))
        ids[i, span] = torch.tensor(list(row), dtype=torch.long)
        mask[i, span] = 1
    return ids.to(device), mask.to(device)


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[target] at each position, without materialising the whole log-softmax."""
    return logits.gather(-1, targets[..., None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)
