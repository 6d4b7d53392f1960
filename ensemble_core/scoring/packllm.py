"""PackLLM's test-time weights for fusing members (Mavromatis et al., 2024, "Pack of LLMs: Model Fusion at
Test-Time via Perplexity Optimization"): `sim` weighs members by how unsurprised each is by the prompt,
`opt` greedily searches the weights that make the fused model least surprised by the prompt."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from ensemble_core.members.base import Member
from ensemble_core.members.step import StepSession
from ensemble_core.mixing import Mixer


def sim_weights(perplexities: Sequence[float], tau: float) -> list[float]:
    """PackLLM-sim: softmax(-log(perplexity) / tau) over the members."""
    logits = torch.tensor([-math.log(max(p, 1e-30)) / tau for p in perplexities], dtype=torch.float64)
    return torch.softmax(logits, dim=0).tolist()


class FusedPromptPerplexity:
    """The fused model's perplexity of a text for any weights, from one stepping session per member.

    The text is read as the first member's tokens (in union ids); every member starts from the first token's
    text and is then teacher-forced on the following tokens in its own ids (as in fused decoding), and its
    distribution before each token is kept. The last `max_positions` tokens are scored, which bounds the
    memory ([positions, union vocabulary] per member). `open_session(member, prompts)` opens a session (a
    `RunContext.step_session`, so each is bounded and recorded)."""

    def __init__(
        self,
        members: Sequence[Member],
        mixer: Mixer,
        text: str,
        open_session: Callable[[Member, list[str]], StepSession],
        max_positions: int = 32,
    ):
        self.mixer = mixer
        alignment = mixer.alignment
        first = alignment.tokenizers[0](text, add_special_tokens=False)["input_ids"]
        self.targets = alignment.to_union[0][torch.tensor(first, dtype=torch.long)].tolist()[
            -(max_positions + 1) :
        ]
        self.logprobs: list[torch.Tensor] = []
        if len(self.targets) < 2:
            return
        start = alignment.decode([self.targets[0]])
        for m, member in enumerate(members):
            session = open_session(member, [start])
            try:
                rows = [session.logprobs()[0]]
                for union_id in self.targets[1:-1]:
                    rows.append(session.advance([alignment.feed(m, union_id)])[0])
            finally:
                session.close()
            self.logprobs.append(torch.stack(rows))

    @property
    def n_positions(self) -> int:
        return max(len(self.targets) - 1, 0)

    def __call__(self, weights: Sequence[float]) -> float:
        """exp(mean negative log-probability) of the scored tokens under the fused model with these
        weights."""
        if not self.n_positions:
            return 1.0
        w = torch.tensor([list(weights)] * self.n_positions, dtype=torch.float32)
        scores = torch.log_softmax(self.mixer.mix(self.logprobs, range(len(self.logprobs)), w), dim=-1)
        targets = torch.tensor(self.targets[1:], device=scores.device)[:, None]
        return math.exp(-float(scores.gather(1, targets).mean()))


def opt_weights(objective: FusedPromptPerplexity, n_members: int, grid: int = 11) -> list[float]:
    """PackLLM-opt's greedy search: start from the member with the lowest perplexity alone, then for each next
    member (best first) choose the share lambda in a grid that minimises the fused perplexity of
    (1 - lambda) * weights + lambda * that member."""
    alone = [objective(_one_hot(i, n_members)) for i in range(n_members)]
    order = sorted(range(n_members), key=lambda i: alone[i])
    weights = _one_hot(order[0], n_members)
    best = alone[order[0]]
    for k in order[1:]:
        round_best = weights
        for step in range(1, grid):
            share = step / (grid - 1)
            candidate = [(1 - share) * w for w in weights]
            candidate[k] += share
            value = objective(candidate)
            if value < best:
                best, round_best = value, candidate
        weights = round_best
    return weights


def _one_hot(i: int, n: int) -> list[float]:
    return [1.0 if j == i else 0.0 for j in range(n)]
