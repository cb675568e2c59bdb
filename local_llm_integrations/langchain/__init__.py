"""LangChain adapters: ``ChatLocal``, ``LocalLLM`` and ``LocalEmbeddings``."""

from __future__ import annotations

from local_llm_integrations.langchain.chat_models import ChatLocal
from local_llm_integrations.langchain.embeddings import LocalEmbeddings
from local_llm_integrations.langchain.llms import LocalLLM

__all__ = ["ChatLocal", "LocalEmbeddings", "LocalLLM"]
