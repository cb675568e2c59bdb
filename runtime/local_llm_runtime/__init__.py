"""local_llm_runtime: Ollama-style names to verified GGUF files, and the engine.

This package imports no LangChain and no LlamaIndex: adapters depend on it,
never the other way round.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from local_llm_runtime.llama.engine import Engine, LlamaEngine

from local_llm_runtime.backends import default_engine
from local_llm_runtime.errors import (
    AuthenticationError,
    ChecksumMismatchError,
    ContextLengthExceededError,
    DownloadError,
    GenerationError,
    InvalidModelFileError,
    InvalidModelNameError,
    InvalidOptionError,
    InvalidToolCallError,
    LlamaBindingError,
    LocalLLMError,
    ModelExistsError,
    ModelLoadError,
    ModelNotFoundError,
    OfflineError,
    QuantizationNotFoundError,
    RequestTimeoutError,
    StoreError,
    StreamReclaimedError,
    TemplateError,
    UnknownOptionError,
)
from local_llm_runtime.interface import EngineProtocol
from local_llm_runtime.settings import RuntimeSettings
from local_llm_runtime.store.library import LocalModel, ModelLibrary
from local_llm_runtime.store.names import FileRef, HubRef, ModelRef, OllamaName, parse_ref
from local_llm_runtime.store.records import ModelRecord
from local_llm_runtime.types import (
    ChatResult,
    Chunk,
    FinalChunk,
    ModelInfo,
    ReasoningDelta,
    RunningModel,
    TextDelta,
    Timings,
    ToolCallDelta,
    Usage,
)

__version__ = "0.1.0"

__all__ = [
    "AuthenticationError",
    "ChatResult",
    "ChecksumMismatchError",
    "Chunk",
    "ContextLengthExceededError",
    "DownloadError",
    "Engine",
    "EngineProtocol",
    "FinalChunk",
    "GenerationError",
    "FileRef",
    "HubRef",
    "InvalidModelFileError",
    "InvalidModelNameError",
    "InvalidOptionError",
    "InvalidToolCallError",
    "LlamaBindingError",
    "LocalLLMError",
    "LlamaEngine",
    "LocalModel",
    "ModelExistsError",
    "ModelLibrary",
    "ModelInfo",
    "ModelLoadError",
    "ModelNotFoundError",
    "ModelRecord",
    "ModelRef",
    "OfflineError",
    "OllamaName",
    "QuantizationNotFoundError",
    "RequestTimeoutError",
    "ReasoningDelta",
    "RunningModel",
    "RuntimeSettings",
    "StoreError",
    "StreamReclaimedError",
    "TemplateError",
    "UnknownOptionError",
    "TextDelta",
    "Timings",
    "ToolCallDelta",
    "Usage",
    "__version__",
    "copy",
    "create",
    "default_engine",
    "list_models",
    "parse_ref",
    "ps",
    "pull",
    "remove",
    "resolve",
    "show",
    "unload",
]

_LAZY = {
    # The in-process engine imports llama_cpp (native library): load it on first
    # use only, so store/CLI commands that never generate stay fast. Not a static
    # import: the facade reaches backends only through local_llm_runtime.backends.
    "Engine": "local_llm_runtime.llama.engine",
    "LlamaEngine": "local_llm_runtime.llama.engine",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'local_llm_runtime' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


def resolve(model: str, *, pull: bool = True) -> LocalModel:
    """Resolve a model reference to files on disk (pulling if needed).

    See :meth:`ModelLibrary.resolve`.
    """
    return ModelLibrary().resolve(model, pull=pull)


def pull(model: str, *, update: bool = False) -> ModelRecord:
    """Download and verify a model. See :meth:`ModelLibrary.pull`."""
    return ModelLibrary().pull(model, update=update)


def list_models() -> list[ModelRecord]:
    """The models in the store, newest first. See :meth:`ModelLibrary.list`."""
    return ModelLibrary().list()


def show(model: str) -> dict[str, Any]:
    """Describe a local model from its GGUF header. See :meth:`ModelLibrary.show`."""
    return ModelLibrary().show(model)


def remove(model: str) -> ModelRecord:
    """Remove a name from the store. See :meth:`ModelLibrary.remove`."""
    return ModelLibrary().remove(model)


def copy(source: str, destination: str) -> ModelRecord:
    """Copy a model to a new name. See :meth:`ModelLibrary.copy`."""
    return ModelLibrary().copy(source, destination)


def create(
    name: str,
    source: str,
    *,
    system: str | None = None,
    parameters: dict[str, Any] | None = None,
) -> ModelRecord:
    """Create a named model from a file or another model. See :meth:`ModelLibrary.create`."""
    return ModelLibrary().create(name, source, system=system, parameters=parameters)


def ps() -> list[RunningModel]:
    """The models loaded in this process now, like ``ollama ps``.

    Each entry has the name, file, size, context, GPU layers (and why) and
    when it expires.
    """
    return default_engine().ps()


def unload(model: str | None = None) -> int:
    """Unload a model (or all) from memory now; returns how many instances."""
    return default_engine().unload(model)
