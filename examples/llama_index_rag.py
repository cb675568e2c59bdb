"""Fully local RAG with LlamaIndex: local embeddings, a local LLM, a streamed answer.

Indexes every text file of a folder with ``LocalEmbedding``, retrieves the chunks
closest to a question and streams the answer of ``LocalLLM`` -- both served
in-process from one GGUF model by the shared runtime (no server, no network once
the model is local).

Usage::

    python examples/llama_index_rag.py [MODEL] [QUESTION]

``MODEL`` (or ``$LOCAL_LLM_MODEL``) is any model reference: a name such as
``qwen2.5-coder:0.5b`` (the default, registered by ``scripts/demo.py``) or a
path to a ``.gguf`` file. ``$LOCAL_LLM_RAG_DIR`` picks another folder.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from llama_index.core import Settings, SimpleDirectoryReader, VectorStoreIndex

from local_llm_integrations.llama_index import LocalEmbedding, LocalLLM

MODEL = (
    sys.argv[1] if len(sys.argv) > 1 else os.environ.get("LOCAL_LLM_MODEL", "qwen2.5-coder:0.5b")
)
QUESTION = (
    sys.argv[2] if len(sys.argv) > 2 else "What is the maintenance robot on Halcyon-7 called?"
)
FOLDER = Path(os.environ.get("LOCAL_LLM_RAG_DIR", Path(__file__).parent / "data" / "llama_index"))


def main() -> None:
    # One model file serves both roles; the runtime loads it once for generation
    # and once as an embedding instance (mean pooling), shared process-wide.
    Settings.llm = LocalLLM(model=MODEL, temperature=0, num_predict=96)
    Settings.embed_model = LocalEmbedding(model=MODEL)

    documents = SimpleDirectoryReader(str(FOLDER), required_exts=[".txt"]).load_data()
    for document in documents:
        # Embed the text alone: file paths and dates in the metadata would only add
        # noise to a small model's vectors. The LLM still sees the file name.
        document.excluded_embed_metadata_keys = list(document.metadata)
        document.excluded_llm_metadata_keys = [k for k in document.metadata if k != "file_name"]
    index = VectorStoreIndex.from_documents(documents)
    print(f"Indexed {len(documents)} files from {FOLDER} with {MODEL}")

    query_engine = index.as_query_engine(similarity_top_k=2, streaming=True)
    print(f"Q: {QUESTION}\nA: ", end="", flush=True)
    response = query_engine.query(QUESTION)
    for delta in response.response_gen:  # type: ignore[union-attr]
        print(delta, end="", flush=True)
    print()
    sources = [node.node.metadata.get("file_name") for node in response.source_nodes]
    print("Sources:", ", ".join(str(s) for s in sources))


if __name__ == "__main__":
    main()
