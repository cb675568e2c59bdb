"""The in-process backend: llama.cpp through llama-cpp-python.

The only package that imports ``llama_cpp``: the engine, the model pool and
loader, GPU offload, sampling, continuous batching (slots) and embeddings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from local_llm_runtime.llama.engine import LlamaEngine, default_engine

__all__ = ["LlamaEngine", "default_engine"]


def __getattr__(name: str) -> Any:
    # Lazy, so that importing one module of this package (repack, binding)
    # does not import the engine and everything it imports.
    if name in __all__:
        from local_llm_runtime.llama import engine

        return getattr(engine, name)
    raise AttributeError(f"module 'local_llm_runtime.llama' has no attribute {name!r}")
