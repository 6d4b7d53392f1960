"""The step interface: a member's next-token distribution with its own KV cache, advanced by fed ids, and the
grammar state (`TokenConstraint`) that may restrict its next token.

Token-level strategies drive one `StepSession` per member per request; each row of the session is one prompt.
Speculative decoding also needs the distributions at every fed position (`advance_positions`: a verifier
checks several drafted tokens in one forward) and to take rejected tokens back (`rewind`); sessions that can
say so with `supports_rewind`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import torch


class StepSession(ABC):
    """Per-request decoding state of one member: a batch of rows, each with its own growing sequence."""

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Width of the distributions this session returns."""

    @abstractmethod
    def logprobs(self) -> torch.Tensor:
        """Next-token log-probabilities for every row, shape [rows, vocab_size], float32."""

    @abstractmethod
    def advance(self, token_ids: Sequence[Sequence[int]]) -> torch.Tensor:
        """Feed each row its own (possibly empty, possibly several) next token ids; return the new
        `logprobs()`."""

    @abstractmethod
    def token_ids(self, row: int) -> list[int]:
        """All ids of a row so far (prompt and fed ids), without padding."""

    @property
    def supports_rewind(self) -> bool:
        """Whether `advance_positions` and `rewind` work (speculative decoding needs both)."""
        return False

    def advance_positions(self, token_ids: Sequence[Sequence[int]]) -> list[torch.Tensor]:
        """Feed each row its ids like `advance`; return per row the log-probabilities after each fed id,
        shape [len(ids), vocab_size] (the last one is the row's new `logprobs()`)."""
        raise NotImplementedError(f"{type(self).__name__} cannot return the distribution at every position")

    def rewind(self, counts: Sequence[int]) -> None:
        """Take back the last `counts[row]` fed ids of each row (never the whole row), as if they had never
        been fed; `logprobs()` is then that of the shorter row."""
        raise NotImplementedError(f"{type(self).__name__} cannot take back fed ids")

    def narrow(self, token_ids: Sequence[int]) -> None:  # noqa: B027 (a hint a session may ignore)
        """A hint: from now on only the distribution over `token_ids` is needed, the others may come back as
        -inf (a drafter's output layer shrinks to those rows). A session that ignores it stays correct."""

    def close(self) -> None:  # noqa: B027 (a session with nothing to free keeps this no-op)
        """Free the cache early; sessions are also freed when garbage-collected."""


class TokenConstraint(Protocol):
    """A grammar state that says which of a member's own tokens may come next (`allowed`, a bool mask over
    its vocabulary), whether some ids could come next without consuming them (`fits`), and consumes the ids
    the answer takes (`advance`); token fusion masks the union vocabulary with it."""

    def allowed(self) -> torch.Tensor: ...

    def fits(self, ids: Sequence[int]) -> bool: ...

    def advance(self, ids: Sequence[int]) -> bool: ...
