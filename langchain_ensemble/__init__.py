"""llm-ensemble for LangChain: `EnsembleChatModel` (an ensemble as a `BaseChatModel`) and `LangChainMember`
(any LangChain chat model as an ensemble member)."""

from langchain_ensemble.chat_model import EnsembleChatModel
from langchain_ensemble.member import LangChainMember

__all__ = ["EnsembleChatModel", "LangChainMember"]
