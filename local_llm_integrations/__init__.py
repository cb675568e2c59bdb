"""local_llm_integrations: LangChain and LlamaIndex adapters over ``local_llm_runtime``.

``from local_llm_integrations import ChatLocal`` works and imports LangChain
only (never LlamaIndex). The LlamaIndex classes live in
``local_llm_integrations.llama_index``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from local_llm_integrations.langchain import ChatLocal, LocalEmbeddings

__all__ = ["ChatLocal", "LocalEmbeddings"]

_LAZY = {
    "ChatLocal": "local_llm_integrations.langchain",
    "LocalEmbeddings": "local_llm_integrations.langchain",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'local_llm_integrations' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
