"""`SemanticRouter`: the member whose description or example queries are most similar (embedding cosine) to
the conversation answers. The conversation is the recency-weighted mean of its user turns' embeddings (see
`scoring.conversation`), so a follow-up question stays with its thread."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from ensemble_core.asyncio_bridge import to_thread
from ensemble_core.members.base import Member
from ensemble_core.run_context import RunContext
from ensemble_core.scoring.embeddings import normalise
from ensemble_core.strategies.base import resolve_member
from ensemble_core.strategies.routing import EmbeddingRouter, RoutingDecision
from ensemble_core.types import Request


class SemanticRoute(BaseModel):
    """What one member is for: a description and/or example queries it should get."""

    model_config = ConfigDict(extra="forbid")

    member: str = Field(description="name of the member that answers these queries")
    description: str = Field(default="", description="what the member is good at, in a sentence")
    examples: list[str] = Field(default_factory=list, description="example queries this member should answer")

    @model_validator(mode="after")
    def _has_text(self) -> SemanticRoute:
        if not self.texts:
            raise ValueError(
                f"the route for {self.member!r} needs a description or at least one example query"
            )
        return self

    @property
    def texts(self) -> list[str]:
        return [t for t in [self.description, *self.examples] if t.strip()]


class SemanticRouter(EmbeddingRouter):
    """Route by cosine similarity between the conversation and each member's description or examples (the
    best-matching text counts); below `min_similarity` the `default` member answers."""

    name: ClassVar[str] = "semantic-router"
    summary: ClassVar[str] = "the member whose description or examples are most similar to the conversation"
    members_doc: ClassVar[str] = (
        "names of the members it may route to; default: those the routes name (and `default`)"
    )

    routes: list[SemanticRoute] = Field(min_length=1, description="what each member is for")
    default: str | None = Field(
        default=None, description="member that answers when no route is similar enough"
    )
    min_similarity: float = Field(
        default=0.0,
        ge=-1.0,
        le=1.0,
        description="cosine under which the default member answers (needs `default`)",
    )
    _route_vectors: np.ndarray | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _default_for_threshold(self) -> SemanticRouter:
        if self.min_similarity > 0.0 and self.default is None:
            raise ValueError(
                "min_similarity needs a `default` member to answer when no route is similar enough"
            )
        return self

    def default_participants(self, members: Sequence[Member]) -> list[Member]:
        return [resolve_member(members, route.member, "semantic-router.routes") for route in self.routes]

    def role_members(self, members: Sequence[Member]) -> list[Member]:
        return [resolve_member(members, self.default, "semantic-router.default")] if self.default else []

    def route_vectors(self) -> np.ndarray:
        """Unit embeddings of every route text, in route order; computed once and cached."""
        if self._route_vectors is None:
            texts = [text for route in self.routes for text in route.texts]
            self._route_vectors = normalise(self.embed_texts(texts))
        return self._route_vectors

    def similarities(self, request: Request) -> dict[str, float]:
        """Each routed member's best cosine similarity to the conversation, most similar first."""
        query = self.embed_conversations([request.messages])[0]
        cosines = iter(self.route_vectors() @ query)
        best: dict[str, float] = {}
        for route in self.routes:
            for _ in route.texts:
                best[route.member] = max(best.get(route.member, -1.0), float(next(cosines)))
        return dict(sorted(best.items(), key=lambda item: -item[1]))

    async def aroute(self, ctx: RunContext, request: Request) -> RoutingDecision:
        scores = await to_thread(self.similarities, request)
        ranking = list(scores)
        top, similarity = ranking[0], scores[ranking[0]]
        if self.default is not None and similarity < self.min_similarity:
            ranking = list(dict.fromkeys([self.default, *ranking]))
            reason = (
                f"best match {top!r} has cosine {similarity:.3f} < min_similarity {self.min_similarity} "
                f"-> default {self.default!r}"
            )
        else:
            reason = f"most similar: {top!r} (cosine {similarity:.3f})"
        return RoutingDecision(ranking=ranking, reason=reason, score_name="similarity", scores=scores)
