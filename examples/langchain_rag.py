"""An LCEL RAG chain answered by an ensemble; runs offline.

documents -> InMemoryVectorStore (the packaged all-MiniLM-L6-v2 as LangChain Embeddings) -> retriever ->
prompt -> EnsembleChatModel -> StrOutputParser, asked once with invoke and once streamed token by token.
The chain is the one you would write for ChatOpenAI; only the model line differs.

    python examples/langchain_rag.py
    python examples/langchain_rag.py --strategy single --max-tokens 48 "When did the railway close?"
"""

from __future__ import annotations

import argparse

from langchain_core.documents import Document
from langchain_core.language_models import BaseChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable, RunnablePassthrough
from langchain_core.vectorstores import InMemoryVectorStore

from ensemble_core.defaults import default_ensemble
from langchain_ensemble import EnsembleChatModel, SentenceEmbeddings

DOCUMENTS = {
    "observatory": (
        "The Larkspur Observatory stands on Mount Orrin. It was founded in 1897 by the astronomer Helen "
        "Marsh, who built its first telescope with money raised by the town's apple growers."
    ),
    "festival": (
        "Every October the town of Larkspur holds the Lantern Festival. Children carry paper lanterns shaped "
        "like comets up the hill to the observatory, and the night ends with a bonfire."
    ),
    "railway": (
        "The Larkspur narrow-gauge railway opened in 1912. Its steam engine, nicknamed Old Bess, pulled "
        "apple wagons to the harbour until the line closed in 1961."
    ),
    "cheese": (
        "Larkspur blue is a soft cheese made from sheep's milk in the valley below Mount Orrin. It ripens "
        "for eight weeks in limestone caves."
    ),
}

QUESTION = "Who founded the Larkspur Observatory?"

PROMPT = ChatPromptTemplate.from_messages(
    [
        ("system", "Answer the question in one sentence, using only this context:\n\n{context}"),
        ("human", "{question}"),
    ]
)


def build_store() -> InMemoryVectorStore:
    store = InMemoryVectorStore(SentenceEmbeddings())
    store.add_documents([Document(text, metadata={"title": title}) for title, text in DOCUMENTS.items()])
    return store


def format_docs(docs: list[Document]) -> str:
    return "\n\n".join(doc.page_content for doc in docs)


def build_chain(store: InMemoryVectorStore, model: BaseChatModel, top_k: int = 2) -> Runnable[str, str]:
    retriever = store.as_retriever(search_kwargs={"k": top_k})
    return (
        {"context": retriever | format_docs, "question": RunnablePassthrough()}
        | PROMPT
        | model
        | StrOutputParser()
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("question", nargs="?", default=QUESTION)
    parser.add_argument("--strategy", help="a registered strategy name (default: the default ensemble's)")
    parser.add_argument("--max-tokens", type=int, default=48)
    args = parser.parse_args(argv)

    store = build_store()
    model = EnsembleChatModel(ensemble=default_ensemble(args.strategy), max_tokens=args.max_tokens)
    chain = build_chain(store, model)

    print(f"Q: {args.question}")
    for doc in store.similarity_search(args.question, k=2):
        print(f"  retrieved: {doc.metadata['title']}")
    print(f"\n[invoke]\n{chain.invoke(args.question)}")
    print("\n[stream]")
    for token in chain.stream(args.question):
        print(token, end="", flush=True)
    print()


if __name__ == "__main__":
    main()
