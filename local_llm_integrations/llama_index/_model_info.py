"""What LlamaIndex's ``LLMMetadata`` needs, read from the GGUF header (weights untouched).

Only called when ``metadata`` is accessed, never at construction. A model that
is not on disk yet (a catalog name not pulled) is not downloaded here: the
caller gets ``None`` and falls back to its configured values.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from local_llm_runtime.errors import LocalLLMError
from local_llm_runtime.prompt.chat_template import CHATML_TEMPLATE
from local_llm_runtime.store.gguf_meta import read_gguf_info
from local_llm_runtime.store.library import ModelLibrary

__all__ = ["ModelInfo", "model_info"]

DEFAULT_NUM_CTX = 4096
"""The runtime's context window when ``num_ctx`` is not set (capped by the model's)."""


@dataclass(frozen=True)
class ModelInfo:
    """Facts about a local GGUF model."""

    trained_context: int | None
    """``{arch}.context_length``: the context the model was trained with."""
    supports_tools: bool
    """Whether its chat template renders tools (ChatML, the fallback, does)."""

    def context_window(self, num_ctx: int | None) -> int:
        """The effective context: ``num_ctx`` (or the runtime's default) capped by training."""
        wanted = num_ctx or DEFAULT_NUM_CTX
        return min(wanted, self.trained_context) if self.trained_context else wanted


@functools.lru_cache(maxsize=64)
def _read(path: str, _mtime_ns: int, _size: int) -> ModelInfo:
    metadata = read_gguf_info(Path(path)).metadata
    arch = metadata.get("general.architecture")
    trained = metadata.get(f"{arch}.context_length")
    template = metadata.get("tokenizer.chat_template")
    source = template if isinstance(template, str) and template else CHATML_TEMPLATE
    return ModelInfo(
        trained_context=trained if isinstance(trained, int) and trained > 0 else None,
        supports_tools="tools" in source,
    )


def model_info(model: str, library: ModelLibrary) -> ModelInfo | None:
    """Read a model's header without loading or pulling it.

    Args:
        model: Any model reference the runtime understands.
        library: Resolves the reference (the engine's own library).

    Returns:
        The facts, or ``None`` when the model is not on disk (or unreadable).
    """
    try:
        path = library.resolve(model, pull=False).path
        stat = path.stat()
        return _read(str(path), stat.st_mtime_ns, stat.st_size)
    except (LocalLLMError, OSError, LookupError, ValueError):
        return None
