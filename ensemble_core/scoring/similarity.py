"""Pairwise similarity between answers, for minimum-Bayes-risk selection: embedding cosine (the packaged
all-MiniLM-L6-v2 by default) or a lexical score that needs no model (token F1 and character n-gram F, as
chrF)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np

from ensemble_core.scoring.answers import normalise_text
from ensemble_core.scoring.embeddings import EmbedFn, default_embed, normalise

SimilarityFn = Callable[[Sequence[str]], np.ndarray]
"""texts -> symmetric [n, n] matrix of similarities in [0, 1] (or [-1, 1] for cosine)."""


def embedding_similarity(texts: Sequence[str], embed: EmbedFn = default_embed) -> np.ndarray:
    """Cosine similarity of the texts' embeddings."""
    vectors = normalise(np.asarray(embed(list(texts)), dtype=np.float64))
    return vectors @ vectors.T


def _f_score(a: Counter[str], b: Counter[str]) -> float:
    overlap = sum((a & b).values())
    if overlap == 0:
        return 1.0 if not a and not b else 0.0
    precision, recall = overlap / sum(b.values()), overlap / sum(a.values())
    return 2 * precision * recall / (precision + recall)


def token_f1(a: str, b: str) -> float:
    """F1 of the bags of normalised words (SQuAD-style answer overlap)."""
    return _f_score(Counter(normalise_text(a).split()), Counter(normalise_text(b).split()))


def char_ngram_f(a: str, b: str, max_n: int = 6) -> float:
    """Mean F score of character 1..max_n-grams, spaces removed (chrF with beta 1)."""
    a, b = "".join(a.lower().split()), "".join(b.lower().split())
    scores = [
        _f_score(
            Counter(a[i : i + n] for i in range(len(a) - n + 1)),
            Counter(b[i : i + n] for i in range(len(b) - n + 1)),
        )
        for n in range(1, max_n + 1)
        if len(a) >= n or len(b) >= n
    ]
    return float(np.mean(scores)) if scores else 1.0


def lexical_similarity(texts: Sequence[str]) -> np.ndarray:
    """The mean of token F1 and character n-gram F for every pair: a similarity that needs no model."""
    n = len(texts)
    matrix = np.eye(n)
    for i in range(n):
        for j in range(i + 1, n):
            matrix[i, j] = matrix[j, i] = (
                token_f1(texts[i], texts[j]) + char_ngram_f(texts[i], texts[j])
            ) / 2
    return matrix


SIMILARITIES: dict[str, SimilarityFn] = {"embedding": embedding_similarity, "lexical": lexical_similarity}
