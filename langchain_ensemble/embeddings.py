"""`SentenceEmbeddings`: the packaged all-MiniLM-L6-v2 (or any `texts -> vectors` function) as LangChain
`Embeddings`, so a vector store next to an `EnsembleChatModel` runs offline with no extra download."""

from __future__ import annotations

from langchain_core.embeddings import Embeddings

from ensemble_core.scoring.embeddings import EmbedFn, default_embed


class SentenceEmbeddings(Embeddings):
    """L2-normalised sentence embeddings; `embed` defaults to the packaged all-MiniLM-L6-v2 (384
    dimensions)."""

    def __init__(self, embed: EmbedFn = default_embed):
        self.embed = embed

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.embed(texts).tolist() if texts else []

    def embed_query(self, text: str) -> list[float]:
        return self.embed([text])[0].tolist()
