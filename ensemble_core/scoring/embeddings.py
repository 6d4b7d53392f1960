"""Sentence embeddings shared by strategies (semantic routing, learned routing, MBR). The default is the
packaged all-MiniLM-L6-v2; any `texts -> array[n, d]` function can be passed instead."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from functools import lru_cache

import numpy as np

EmbedFn = Callable[[Sequence[str]], np.ndarray]

_LOCK = threading.Lock()


@lru_cache(maxsize=1)
def _minilm():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    from ensemble_core.members.packaged import minilm_path

    return SentenceTransformer(str(minilm_path()), device="cpu")


def default_embed(texts: Sequence[str]) -> np.ndarray:
    """L2-normalised all-MiniLM-L6-v2 embeddings, shape [len(texts), 384]; the model loads once per
    process."""
    with _LOCK:
        model = _minilm()
        return np.asarray(model.encode(list(texts), normalize_embeddings=True, convert_to_numpy=True))


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), so dot products are cosine similarities."""
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.where(norms == 0, 1.0, norms)
