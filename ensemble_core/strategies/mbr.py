"""`MBR`: minimum-Bayes-risk selection, the candidate most similar on average to all the others."""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from ensemble_core.asyncio_bridge import to_thread
from ensemble_core.run_context import RunContext
from ensemble_core.scoring.answers import answer_text
from ensemble_core.scoring.similarity import SIMILARITIES, SimilarityFn
from ensemble_core.strategies.candidates import CandidateStrategy
from ensemble_core.types import Request, Result


class MBR(CandidateStrategy):
    """Every member answers (concurrently); the answer with the highest mean similarity to the other answers
    is returned (the consensus answer, robust to one member's outlier). Tool calls compare as their JSON."""

    name: ClassVar[str] = "mbr"
    summary: ClassVar[str] = "the candidate with the highest mean similarity to the others"
    paper: ClassVar[str | None] = (
        "Minimum Bayes Risk Decoding with Neural Metrics of Translation Quality (Freitag et al., 2022)"
    )

    similarity: Literal["embedding", "lexical"] | SimilarityFn = Field(
        default="embedding",
        description=(
            "'embedding' (cosine of all-MiniLM-L6-v2 sentence embeddings), 'lexical' (token F1 and character "
            "n-gram F, no model), or a function texts -> [n, n] similarity matrix"
        ),
    )

    async def arun(self, ctx: RunContext, request: Request) -> Result:
        answers = await self.gather(ctx, request)
        if len(answers) == 1:
            return ctx.result(answers[0], reason="only one answer", mbr_scores=[1.0])
        similarity = SIMILARITIES[self.similarity] if isinstance(self.similarity, str) else self.similarity
        texts = [answer_text(a) for a in answers]
        matrix = np.asarray(await to_thread(similarity, texts), dtype=np.float64)
        n = len(answers)
        scores = (matrix.sum(axis=1) - np.diag(matrix)) / (n - 1)
        best = int(np.argmax(scores))
        return ctx.result(
            answers[best],
            reason=f"highest mean similarity to the other {n - 1} answers ({scores[best]:.3f})",
            mbr_scores=[round(float(s), 4) for s in scores],
            candidates=[a.member for a in answers],
        )
