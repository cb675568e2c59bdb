"""RAG: documents -> LocalEmbeddings -> in-memory vector store -> retriever -> ChatLocal answer with citations."""

from __future__ import annotations

from _model import model_name
from langchain_core.documents import Document
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnablePassthrough
from langchain_core.vectorstores import InMemoryVectorStore

from local_llm_integrations import ChatLocal, LocalEmbeddings

DOCS = [
    Document(
        "The Zephyr-9 espresso machine heats up in 42 seconds and has a 1.8 litre tank.",
        metadata={"id": "manual-1"},
    ),
    Document(
        "Descale the Zephyr-9 every 300 cups using the citric-acid cycle (menu > care > descale).",
        metadata={"id": "manual-2"},
    ),
    Document(
        "Our support line is open Monday to Friday, 8:00 to 17:00 CET.", metadata={"id": "support"}
    ),
    Document(
        "Llamas are domesticated South American camelids used as pack animals.",
        metadata={"id": "trivia"},
    ),
]

model = model_name()
store = InMemoryVectorStore(LocalEmbeddings(model=model))
store.add_documents(DOCS)
retriever = store.as_retriever(search_kwargs={"k": 2})


def format_docs(docs: list[Document]) -> str:
    return "\n".join(f"[{d.metadata['id']}] {d.page_content}" for d in docs)


prompt = ChatPromptTemplate.from_template(
    "Context:\n{context}\n\nQuestion: {question}\n\n"
    "Answer in one sentence using only the context, then cite the passage you used as [id]."
)
chain = (
    {"context": retriever | format_docs, "question": RunnablePassthrough()}
    | prompt
    | ChatLocal(model=model, temperature=0, max_tokens=128)
    | StrOutputParser()
)

if __name__ == "__main__":
    question = "How long does the Zephyr-9 take to heat up?"
    print("retrieved:", [d.metadata["id"] for d in retriever.invoke(question)])
    for piece in chain.stream(question):
        print(piece, end="", flush=True)
    print()
