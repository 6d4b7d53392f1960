"""`HFStepSession`: a local model's next-token distributions for rows of token ids, advanced by fed ids with
one `DynamicCache` (token fusion and speculative strategies drive it)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import DynamicCache

from ensemble_core.members.hf.cache import cache_argument
from ensemble_core.members.hf.model import LoadedModel
from ensemble_core.members.hf.tensors import padded
from ensemble_core.members.step import StepSession


class HFStepSession(StepSession):
    """Rows of token ids with one `DynamicCache`. Rows advance by different numbers of ids: shorter rows are
    left-padded inside the new chunk and masked, with positions taken from the attention mask."""

    def __init__(self, lm: LoadedModel, prompts: Sequence[list[int]]):
        self.lm = lm
        self.model = lm.model
        self._rows = [list(p) for p in prompts]
        lm.check_fits(max(len(p) for p in self._rows), room_for_one_more=True)
        self.cache = DynamicCache(config=self.model.config)
        self.mask = torch.zeros((len(self._rows), 0), dtype=torch.long, device=lm.device)
        self._logprobs = torch.empty(0)
        self._forward(self._rows)

    @property
    def vocab_size(self) -> int:
        return int(self._logprobs.shape[-1])

    def logprobs(self) -> torch.Tensor:
        return self._logprobs

    def token_ids(self, row: int) -> list[int]:
        return list(self._rows[row])

    def advance(self, token_ids: Sequence[Sequence[int]]) -> torch.Tensor:
        if len(token_ids) != len(self._rows):
            raise ValueError(
                f"advance needs one list of ids per row ({len(self._rows)}), got {len(token_ids)}"
            )
        for row, ids in zip(self._rows, token_ids, strict=True):
            row.extend(ids)
        if any(token_ids):
            self._forward(token_ids)
        return self._logprobs

    def _forward(self, chunks: Sequence[Sequence[int]]) -> None:
        ids, new_mask = padded(chunks, self.lm.pad_id(), self.lm.device, side="left")
        width = ids.shape[1]
        self.mask = torch.cat([self.mask, new_mask], dim=1)
        positions = (self.mask.cumsum(-1) - 1).clamp(min=0)[:, -width:]
        with torch.inference_mode():
            out = self.model(
                input_ids=ids,
                attention_mask=self.mask,
                position_ids=positions,
                **cache_argument(self.model, self.cache),
                use_cache=True,
                logits_to_keep=1,
            )
        fresh = torch.log_softmax(out.logits[:, -1].float(), dim=-1)
        if self._logprobs.numel():
            moved = torch.tensor([bool(c) for c in chunks], device=fresh.device)[:, None]
            fresh = torch.where(moved, fresh, self._logprobs)
        self._logprobs = fresh

    def close(self) -> None:
        self.cache = DynamicCache(config=self.model.config)
