"""`LoadedModel`: a member's model and tokenizer on its device, with the token-level facts every job needs
(special ids, how a prompt text is encoded, the context window), so loading, prompting, generation, scoring
and stepping share one view of the model without reaching into the member."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from ensemble_core.errors import ContextWindowError


@dataclass(frozen=True)
class LoadedModel:
    """The loaded weights of one member (shared with other members of the same weights) and its name and
    context window."""

    model: Any
    tokenizer: PreTrainedTokenizerBase
    device: torch.device
    name: str
    context_window: int | None

    @property
    def vocab_width(self) -> int:
        """Width of the model's next-token scores (its output layer may be padded past the tokenizer)."""
        return max(len(self.tokenizer), int(getattr(self.model.config, "vocab_size", 0) or 0))

    def bos_id(self) -> int:
        tok = self.tokenizer
        for candidate in (tok.bos_token_id, tok.eos_token_id, 0):
            if candidate is not None:
                return int(candidate)
        return 0

    def pad_id(self) -> int:
        tok = self.tokenizer
        return int(tok.pad_token_id) if tok.pad_token_id is not None else self.bos_id()

    def eos_ids(self) -> list[int]:
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        return [eos] if isinstance(eos, int) else list(eos or [])

    def encode_text(self, text: str) -> list[int]:
        """Ids of a prompt text, with the tokenizer's special tokens (e.g. <bos>) unless the text already
        starts with them (a rendered chat template does). Generate, score and step all encode prompts this
        way."""
        bos = self.tokenizer.bos_token
        add_special = not (bos and text.startswith(bos))
        return list(self.tokenizer(text, add_special_tokens=add_special)["input_ids"])

    def encode_continuation(self, text: str) -> list[int]:
        """Ids of a continuation of a prompt (no special tokens)."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids: Sequence[int]) -> str:
        """Text of token ids, without special tokens."""
        text = self.tokenizer.decode(list(ids), skip_special_tokens=True)
        assert isinstance(text, str)  # one sequence decodes to one text
        return text

    def check_fits(self, n_tokens: int, *, room_for_one_more: bool = False) -> None:
        """Raise `ContextWindowError` for a sequence longer than the context window (or, for a prompt that
        must leave room to answer, one that fills it)."""
        window = self.context_window
        if window is not None and (n_tokens >= window if room_for_one_more else n_tokens > window):
            raise ContextWindowError(self.name, n_tokens, window)
