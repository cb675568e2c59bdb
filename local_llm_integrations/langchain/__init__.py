"""LangChain adapters: ``ChatLocal``, ``LocalLLM`` and ``LocalEmbeddings``.

Each class is imported on first use (PEP 562): ``from local_llm_integrations
import ChatLocal`` does not import the other two modules.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from local_llm_integrations.langchain.chat_models import ChatLocal
    from local_llm_integrations.langchain.embeddings import LocalEmbeddings
    from local_llm_integrations.langchain.llms import LocalLLM

__all__ = ["ChatLocal", "LocalEmbeddings", "LocalLLM"]

_MODULES = {
    "ChatLocal": "local_llm_integrations.langchain.chat_models",
    "LocalEmbeddings": "local_llm_integrations.langchain.embeddings",
    "LocalLLM": "local_llm_integrations.langchain.llms",
}


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module 'local_llm_integrations.langchain' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
