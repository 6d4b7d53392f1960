"""Sampled copies of a request, seeded so sampled answers are reproducible (self-consistency, agreement)."""

from __future__ import annotations

from ensemble_core.types import Request


def sampled_requests(
    request: Request, samples: int, temperature: float, first_seed: int = 0
) -> list[Request]:
    """`samples` copies of the request sampled at `temperature`, with the seeds seed + first_seed, + 1, ...
    (seed 0 when the request has none)."""
    base_seed = (request.params.seed or 0) + first_seed
    return [request.with_params(temperature=temperature, seed=base_seed + i) for i in range(samples)]
