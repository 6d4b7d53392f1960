"""`HFStepSession`: a local model's next-token distributions for rows of token ids, advanced by fed ids with
one `DynamicCache` (token fusion and speculative strategies drive it)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from transformers import DynamicCache

from ensemble_core.members.hf.cache import cache_argument, can_drop_last, drop_last
from ensemble_core.members.hf.int8_linear import Int8Linear
from ensemble_core.members.hf.model import LoadedModel
from ensemble_core.members.hf.tensors import padded
from ensemble_core.members.step import StepSession


class HFStepSession(StepSession):
    """Rows of token ids with one `DynamicCache`. Rows advance by different numbers of ids: shorter rows are
    left-padded inside the new chunk and masked, with positions taken from the attention mask.

    `rewind` masks a row's last cache columns out (positions follow the mask, so the row reads on as if they
    had never been fed) and crops the columns no row uses any more: with one row, that is a plain crop. The
    distribution of a rewound row is computed again (its last id fed once more) only if it is asked for
    before the row is advanced."""

    def __init__(self, lm: LoadedModel, prompts: Sequence[list[int]]):
        self.lm = lm
        self.model = lm.model
        self._rows = [list(p) for p in prompts]
        lm.check_fits(max(len(p) for p in self._rows), room_for_one_more=True)
        self.cache = DynamicCache(config=self.model.config)
        self.mask = torch.zeros((len(self._rows), 0), dtype=torch.long, device=lm.device)
        self._logprobs = torch.empty(0)
        self._stale: set[int] = set()  # rewound rows whose `_logprobs` row is out of date
        self._head: _NarrowHead | None = None
        self._forward(self._rows)

    @property
    def vocab_size(self) -> int:
        return int(self._logprobs.shape[-1])

    @property
    def supports_rewind(self) -> bool:
        return can_drop_last(self.cache)

    def logprobs(self) -> torch.Tensor:
        if self._stale:
            self._refresh()
        return self._logprobs

    def token_ids(self, row: int) -> list[int]:
        return list(self._rows[row])

    def advance(self, token_ids: Sequence[Sequence[int]]) -> torch.Tensor:
        self._extend(token_ids)
        if any(token_ids):
            self._forward(token_ids)
        return self.logprobs()

    def advance_positions(self, token_ids: Sequence[Sequence[int]]) -> list[torch.Tensor]:
        self._extend(token_ids)
        width = max((len(ids) for ids in token_ids), default=0)
        if not width:
            return [self._logprobs.new_empty((0, self.vocab_size)) for _ in token_ids]
        logits = self._forward(token_ids, keep=width)
        return [
            torch.log_softmax(logits[row, width - len(ids) :].float(), dim=-1)
            for row, ids in enumerate(token_ids)
        ]

    def rewind(self, counts: Sequence[int]) -> None:
        self._check_rows(counts)
        for row, (ids, n) in enumerate(zip(self._rows, counts, strict=True)):
            if n < 0 or n >= len(ids):
                raise ValueError(f"rewind row {row} by {n}: give 0 to {len(ids) - 1} (a row keeps one id)")
            if n:
                del ids[-n:]
                self._stale.add(row)
        self._unmask(counts)

    def narrow(self, token_ids: Sequence[int]) -> None:
        """Compute the logits of `token_ids` only (the others -inf): the output layer of a large vocabulary
        is a quarter of a small model's work per token. Models whose logits are not a plain linear layer over
        the last hidden state (soft-capped, scaled) ignore it."""
        self._head = _NarrowHead.of(self.model, token_ids)

    def _check_rows(self, per_row: Sequence[object]) -> None:
        if len(per_row) != len(self._rows):
            raise ValueError(f"give one entry per row ({len(self._rows)}), got {len(per_row)}")

    def _extend(self, token_ids: Sequence[Sequence[int]]) -> None:
        self._check_rows(token_ids)
        for row, ids in zip(self._rows, token_ids, strict=True):
            row.extend(ids)

    def _unmask(self, counts: Sequence[int]) -> None:
        """Mask out each row's last `counts[row]` fed columns; crop the trailing columns no row uses."""
        for row, n in enumerate(counts):
            if n:
                columns = self.mask[row].nonzero().squeeze(-1)[-n:]
                self.mask[row, columns] = 0
        used = self.mask.any(0).nonzero()
        keep = int(used.max()) + 1 if used.numel() else 0
        drop_last(self.cache, self.mask.shape[1] - keep)
        self.mask = self.mask[:, :keep]

    def _refresh(self) -> None:
        """The distributions of rewound rows: each one's last id taken back and fed again."""
        stale = [row in self._stale for row in range(len(self._rows))]
        self._unmask([int(s) for s in stale])
        self._forward([ids[-1:] if s else [] for ids, s in zip(self._rows, stale, strict=True)])

    def _forward(self, chunks: Sequence[Sequence[int]], keep: int = 1) -> torch.Tensor:
        """Run the new chunk of every row through the model; the logits of the last `keep` columns."""
        ids, new_mask = padded(chunks, self.lm.pad_id(), self.lm.device, side="left")
        width = ids.shape[1]
        self.mask = torch.cat([self.mask, new_mask], dim=1)
        positions = (self.mask.cumsum(-1) - 1).clamp(min=0)[:, -width:]
        with torch.inference_mode():
            if self._head is None:
                logits = self.model(
                    input_ids=ids,
                    attention_mask=self.mask,
                    position_ids=positions,
                    **cache_argument(self.model, self.cache),
                    use_cache=True,
                    logits_to_keep=keep,
                ).logits
            else:
                base = self.model.base_model
                hidden = base(
                    input_ids=ids,
                    attention_mask=self.mask,
                    position_ids=positions,
                    **cache_argument(base, self.cache),
                    use_cache=True,
                ).last_hidden_state
                logits = self._head(hidden[:, -keep:])
        fresh = torch.log_softmax(logits[:, -1].float(), dim=-1)
        moved = [bool(c) for c in chunks]
        if self._logprobs.numel():
            fresh = torch.where(torch.tensor(moved, device=fresh.device)[:, None], fresh, self._logprobs)
        self._logprobs = fresh
        self._stale -= {row for row, m in enumerate(moved) if m}
        return logits

    def close(self) -> None:
        self.cache = DynamicCache(config=self.model.config)


class _NarrowHead:
    """A model's output layer over some token ids only: the longest run of ids from 0 through a view of the
    weight (no copy), the rest through their own rows; every other logit is -inf. The layer is an
    `nn.Linear` or an `Int8Linear`."""

    def __init__(self, head: torch.nn.Linear | Int8Linear, token_ids: Sequence[int]):
        ids = sorted(set(token_ids))
        self.width = head.out_features
        self.prefix = next((i for i, t in enumerate(ids) if t != i), len(ids))
        self.rest = torch.tensor(ids[self.prefix :], dtype=torch.long, device=head.weight.device)
        self.prefix_layer = _rows(head, slice(0, self.prefix))
        self.rest_layer = _rows(head, self.rest) if self.rest.numel() else None

    @classmethod
    def of(cls, model: Any, token_ids: Sequence[int]) -> _NarrowHead | None:
        """The narrowed head of `model`, or None when its logits are more than a linear layer."""
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        config = getattr(model, "config", None)
        capped = getattr(config, "final_logit_softcapping", None) is not None
        plain = not capped and not hasattr(config, "logit_scale")
        base = getattr(model, "base_model", model)
        if not isinstance(head, torch.nn.Linear | Int8Linear) or not plain or base is model:
            return None
        return cls(head, token_ids)

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        out = hidden.new_full((*hidden.shape[:-1], self.width), float("-inf"))
        out[..., : self.prefix] = self.prefix_layer(hidden)
        if self.rest_layer is not None:
            out[..., self.rest] = self.rest_layer(hidden)
        return out


def _rows(
    head: torch.nn.Linear | Int8Linear, index: slice | torch.Tensor
) -> Callable[[torch.Tensor], torch.Tensor]:
    """`head` restricted to some output rows (views of the weight for a slice)."""
    if isinstance(head, Int8Linear):
        return head.rows(index)
    weight, bias = head.weight[index], None if head.bias is None else head.bias[index]
    return lambda hidden: torch.nn.functional.linear(hidden, weight, bias)
