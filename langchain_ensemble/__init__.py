"""llm-ensemble for LangChain: `EnsembleChatModel` (an ensemble as a `BaseChatModel`) and `LangChainMember`
(any LangChain chat model as an ensemble member), and `SentenceEmbeddings` (the packaged embedding model as
LangChain `Embeddings`)."""

from langchain_ensemble.chat_model import EnsembleChatModel
from langchain_ensemble.embeddings import SentenceEmbeddings
from langchain_ensemble.member import LangChainMember

__all__ = ["EnsembleChatModel", "LangChainMember", "SentenceEmbeddings"]
