"""local_llm_integrations: LangChain and LlamaIndex adapters over ``local_llm_runtime``.

The adapters arrive with the next milestones; importing this package never
imports LangChain or LlamaIndex by itself.
"""

from __future__ import annotations

__all__: list[str] = []
