"""llm-ensemble for LlamaIndex: `EnsembleLLM`, an ensemble as a `FunctionCallingLLM`; `LlamaIndexMember`, any
LlamaIndex LLM as an ensemble member; `default_embed_model`, the packaged MiniLM as an `embed_model`
(imported on use: it needs llama-index-embeddings-huggingface)."""

from typing import Any

from llamaindex_ensemble.llm import EnsembleLLM
from llamaindex_ensemble.member import LlamaIndexMember

__all__ = ["EnsembleLLM", "LlamaIndexMember", "default_embed_model"]


def __getattr__(name: str) -> Any:
    if name == "default_embed_model":
        from llamaindex_ensemble.embeddings import default_embed_model

        return default_embed_model
    raise AttributeError(f"module 'llamaindex_ensemble' has no attribute {name!r}")
