"""PackLLM's test-time weights for fusing members (Mavromatis et al., 2024, "Pack of LLMs: Model Fusion at
Test-Time via Perplexity Optimization"): `sim` weighs members by how unsurprised each is by the prompt,
`opt` greedily searches the weights that make the fused model least surprised by the prompt."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ensemble_core.errors import CapabilityError
from ensemble_core.members.base import Member
from ensemble_core.members.hf import HFMember
from ensemble_core.mixing import Mixer


def sim_weights(perplexities: Sequence[float], tau: float) -> list[float]:
    """PackLLM-sim: softmax(-log(perplexity) / tau) over the members."""
    logits = torch.tensor([-math.log(max(p, 1e-30)) / tau for p in perplexities], dtype=torch.float64)
    return torch.softmax(logits, dim=0).tolist()


class FusedPromptPerplexity:
    """The fused model's perplexity of a text for any weights, from one forward pass per member.

    The text is read as the first member's tokens (in union ids); every member is teacher-forced on those
    tokens in its own ids (as in fused decoding), and its distribution before each token is kept. The last
    `max_positions` tokens are scored, which bounds the memory ([positions, union vocabulary] per member).
    """

    def __init__(self, members: Sequence[Member], mixer: Mixer, text: str, max_positions: int = 32):
        self.mixer = mixer
        alignment = mixer.alignment
        first = alignment.tokenizers[0](text, add_special_tokens=False)["input_ids"]
        self.targets = alignment.to_union[0][torch.tensor(first, dtype=torch.long)].tolist()[
            -(max_positions + 1) :
        ]
        self.logprobs: list[torch.Tensor] = []
        for m, member in enumerate(members):
            ids = list(alignment.tokenizers[m]("", add_special_tokens=True)["input_ids"])
            positions = []
            for t, union_id in enumerate(self.targets):
                if t > 0:
                    positions.append(len(ids) - 1)
                ids.extend(alignment.feed(m, union_id))
            if not isinstance(member, HFMember):
                raise CapabilityError(
                    f"packllm-opt weights teacher-force a local model; member {member.name!r} is a "
                    f"{type(member).__name__}: use weights='packllm-sim' or 'uniform'"
                )
            self.logprobs.append(_position_logprobs(member, ids, positions))

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


def _position_logprobs(member: HFMember, ids: list[int], positions: list[int]) -> torch.Tensor:
    """A member's next-token log-probabilities at `positions` of one sequence ([positions, vocabulary])."""
    model = member.model
    device = member.device
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([ids], device=device)).logits[0, positions]
    return torch.log_softmax(logits.float(), dim=-1)
