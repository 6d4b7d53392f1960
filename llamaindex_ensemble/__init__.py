"""llm-ensemble for LlamaIndex: `EnsembleLLM`, an ensemble as a `FunctionCallingLLM`, and `LlamaIndexMember`,
any LlamaIndex LLM as an ensemble member."""

from llamaindex_ensemble.llm import EnsembleLLM
from llamaindex_ensemble.member import LlamaIndexMember

__all__ = ["EnsembleLLM", "LlamaIndexMember"]
