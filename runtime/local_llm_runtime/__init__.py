"""local_llm_runtime: Ollama-style names to verified GGUF files, and the engine.

This package imports no LangChain and no LlamaIndex: adapters depend on it,
never the other way round.
"""

from __future__ import annotations

from typing import Any

from local_llm_runtime.errors import (
    AuthenticationError,
    ChecksumMismatchError,
    DownloadError,
    InvalidModelFileError,
    InvalidModelNameError,
    InvalidOptionError,
    LocalLLMError,
    ModelExistsError,
    ModelNotFoundError,
    OfflineError,
    QuantizationNotFoundError,
    StoreError,
)
from local_llm_runtime.library import LocalModel, ModelLibrary
from local_llm_runtime.names import FileRef, HubRef, ModelRef, OllamaName, parse_ref
from local_llm_runtime.settings import RuntimeSettings
from local_llm_runtime.store import ModelRecord

__version__ = "0.1.0"

__all__ = [
    "AuthenticationError",
    "ChecksumMismatchError",
    "DownloadError",
    "FileRef",
    "HubRef",
    "InvalidModelFileError",
    "InvalidModelNameError",
    "InvalidOptionError",
    "LocalLLMError",
    "LocalModel",
    "ModelExistsError",
    "ModelLibrary",
    "ModelNotFoundError",
    "ModelRecord",
    "ModelRef",
    "OfflineError",
    "OllamaName",
    "QuantizationNotFoundError",
    "RuntimeSettings",
    "StoreError",
    "__version__",
    "copy",
    "create",
    "list_models",
    "parse_ref",
    "pull",
    "remove",
    "resolve",
    "show",
]


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
