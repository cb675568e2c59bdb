"""LlamaIndex adapters over the shared in-process runtime.

* :class:`LocalLLM` -- a ``FunctionCallingLLM``: chat, completion, streaming,
  async, tools, grammar-backed structured output, thinking blocks.
* :class:`LocalEmbedding` -- a ``BaseEmbedding``: batched, async.

Both share loaded models with each other and with the LangChain adapters.
"""

from __future__ import annotations

from local_llm_integrations.llama_index.embeddings import LocalEmbedding
from local_llm_integrations.llama_index.llms import LocalLLM

__all__ = ["LocalEmbedding", "LocalLLM"]
