"""The conversation as a router sees it: the user's turns, newest last, and one embedding for the whole
thread.

A follow-up ("and what about 7 times 8?") belongs to its thread, so routers embed every recent user turn and
weight them by recency: the newest turn counts most, each older one `decay` times less. User turns carry the
intent; assistant text, tool calls and tool results are the model's own output (often long JSON in agents), so
they would drown the question and are left out. In an agent loop that ends with a tool result, the query is
still the last user turn.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ensemble_core.scoring.embeddings import EmbedFn, normalise
from ensemble_core.types import Message


def query_turns(messages: Sequence[Message], max_turns: int | None = None) -> list[str]:
    """The user turns' texts, oldest first, at most the `max_turns` newest; without any user turn, the newest
    message that has text (so a system-only or tool-only request still has a query)."""
    turns = [m.content.strip() for m in messages if m.role == "user" and m.content.strip()]
    if not turns:
        turns = [next((m.content.strip() for m in reversed(messages) if m.content.strip()), "")]
    return turns[-max_turns:] if max_turns else turns


def last_query(messages: Sequence[Message]) -> str:
    """The newest user turn (the question being asked now)."""
    return query_turns(messages)[-1]


def ends_with_tool_results(messages: Sequence[Message]) -> bool:
    """Whether the newest message is a tool result: an agent's turn after its tools answered."""
    return bool(messages) and messages[-1].role == "tool"


def recency_weights(n_turns: int, decay: float) -> np.ndarray:
    """Weights of `n_turns` turns, oldest first, summing to 1: the newest has weight proportional to 1, the
    one before it `decay`, then `decay**2`, ... (decay 0: only the newest turn counts)."""
    weights = decay ** np.arange(n_turns - 1, -1, -1, dtype=np.float64)
    return weights / weights.sum()


def embed_conversations(
    conversations: Sequence[Sequence[Message]], embed: EmbedFn, *, decay: float, max_turns: int
) -> np.ndarray:
    """One unit vector per conversation: the recency-weighted mean of its user turns' embeddings. All turns of
    all conversations go to `embed` in one call (batching is what makes fitting on many records fast)."""
    per_conversation = [query_turns(messages, max_turns) for messages in conversations]
    texts = [text for turns in per_conversation for text in turns]
    vectors = normalise(np.asarray(embed(texts), dtype=np.float64))
    out = np.empty((len(per_conversation), vectors.shape[1]))
    start = 0
    for row, turns in enumerate(per_conversation):
        block = vectors[start : start + len(turns)]
        out[row] = recency_weights(len(turns), decay) @ block
        start += len(turns)
    return normalise(out)


def embed_conversation(
    messages: Sequence[Message], embed: EmbedFn, *, decay: float, max_turns: int
) -> np.ndarray:
    """The unit vector of one conversation (see `embed_conversations`)."""
    return embed_conversations([messages], embed, decay=decay, max_turns=max_turns)[0]
