"""local_llm_runtime: Ollama-style names to verified GGUF files, and the engine.

This package imports no LangChain and no LlamaIndex: adapters depend on it,
never the other way round.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from local_llm_runtime.errors import (
    AuthenticationError,
    ChecksumMismatchError,
    ContextLengthExceededError,
    DownloadError,
    GenerationError,
    InsufficientMemoryError,
    InvalidModelFileError,
    InvalidModelNameError,
    InvalidOptionError,
    InvalidToolCallError,
    LlamaBindingError,
    LocalLLMError,
    ModelExistsError,
    ModelfileError,
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

if TYPE_CHECKING:
    from pathlib import Path

    from local_llm_runtime.backends import default_engine
    from local_llm_runtime.interface import EngineProtocol
    from local_llm_runtime.llama.engine import Engine, LlamaEngine
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
        TokenLogprob,
        ToolCallDelta,
        TopLogprob,
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
    "InsufficientMemoryError",
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
    "ModelfileError",
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
    "TokenLogprob",
    "ToolCallDelta",
    "TopLogprob",
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
    # Imported on first use (PEP 562), so that ``import local_llm_runtime`` -- and
    # every adapter, CLI command and server module that imports one of its
    # submodules -- pays only for what it uses. The in-process engine imports
    # llama_cpp (a native library): it is never imported before a model is used.
    "Engine": "local_llm_runtime.llama.engine",
    "LlamaEngine": "local_llm_runtime.llama.engine",
    "default_engine": "local_llm_runtime.backends",
    "EngineProtocol": "local_llm_runtime.interface",
    "RuntimeSettings": "local_llm_runtime.settings",
    "LocalModel": "local_llm_runtime.store.library",
    "ModelLibrary": "local_llm_runtime.store.library",
    "FileRef": "local_llm_runtime.store.names",
    "HubRef": "local_llm_runtime.store.names",
    "ModelRef": "local_llm_runtime.store.names",
    "OllamaName": "local_llm_runtime.store.names",
    "parse_ref": "local_llm_runtime.store.names",
    "ModelRecord": "local_llm_runtime.store.records",
    **dict.fromkeys(
        [
            "ChatResult",
            "Chunk",
            "FinalChunk",
            "ModelInfo",
            "ReasoningDelta",
            "RunningModel",
            "TextDelta",
            "Timings",
            "TokenLogprob",
            "ToolCallDelta",
            "TopLogprob",
            "Usage",
        ],
        "local_llm_runtime.types",
    ),
}
"""Public name -> the module that defines it (imported when the name is first read)."""

_SUBMODULES = frozenset(
    {
        "backends",
        "cli",
        "errors",
        "interface",
        "llama",
        "options",
        "prompt",
        "remote",
        "server",
        "settings",
        "store",
        "streams",
        "testing",
        "types",
        "validation",
    }
)
"""Subpackages reachable as attributes (``local_llm_runtime.backends``) before an import."""


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is not None:
        value = getattr(importlib.import_module(module), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module 'local_llm_runtime' has no attribute {name!r}")
    globals()[name] = value  # later reads skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | _SUBMODULES)


def resolve(model: str, *, pull: bool = True) -> LocalModel:
    """Resolve a model reference to files on disk (pulling if needed).

    See :meth:`ModelLibrary.resolve`.
    """
    from local_llm_runtime.store.library import ModelLibrary

    return ModelLibrary().resolve(model, pull=pull)


def pull(model: str, *, update: bool = False) -> ModelRecord:
    """Download and verify a model. See :meth:`ModelLibrary.pull`."""
    from local_llm_runtime.store.library import ModelLibrary

    return ModelLibrary().pull(model, update=update)


def list_models() -> list[ModelRecord]:
    """The models in the store, newest first. See :meth:`ModelLibrary.list`."""
    from local_llm_runtime.store.library import ModelLibrary

    return ModelLibrary().list()


def show(model: str) -> dict[str, Any]:
    """Describe a local model from its GGUF header. See :meth:`ModelLibrary.show`."""
    from local_llm_runtime.store.library import ModelLibrary

    return ModelLibrary().show(model)


def remove(model: str) -> ModelRecord:
    """Remove a name from the store. See :meth:`ModelLibrary.remove`."""
    from local_llm_runtime.store.library import ModelLibrary

    return ModelLibrary().remove(model)


def copy(source: str, destination: str) -> ModelRecord:
    """Copy a model to a new name. See :meth:`ModelLibrary.copy`."""
    from local_llm_runtime.store.library import ModelLibrary

    return ModelLibrary().copy(source, destination)


def create(
    name: str,
    source: str | None = None,
    *,
    system: str | None = None,
    parameters: dict[str, Any] | None = None,
    template: str | None = None,
    messages: list[dict[str, str]] | None = None,
    adapters: list[str | Path] | None = None,
    license: str | None = None,
    modelfile: str | None = None,
    base_dir: str | Path | None = None,
) -> ModelRecord:
    r"""Create a named model from a file or another model, or from a Modelfile's text.

    ``create("my-qwen", modelfile="FROM qwen2.5:7b\nSYSTEM You are Mario.")`` is
    ``local-llm create my-qwen -f Modelfile`` (relative paths in it are relative to
    ``base_dir``, default the current directory). See :meth:`ModelLibrary.create` and
    :meth:`ModelLibrary.create_from_modelfile`.

    Raises:
        InvalidOptionError: Both or neither of ``source`` and ``modelfile``, or
            ``system``/``parameters``/``template``/``messages``/``adapters``/``license``
            beside a ``modelfile``.
    """
    from local_llm_runtime.store.library import ModelLibrary

    bound = (system, parameters, template, messages, adapters, license)
    if modelfile is not None:
        if source is not None or any(value is not None for value in bound):
            raise InvalidOptionError(
                "Give either a modelfile or source (with system/parameters): write FROM, "
                "SYSTEM and PARAMETER lines in the Modelfile."
            )
        return ModelLibrary().create_from_modelfile(name, modelfile, base_dir=base_dir)
    if source is None:
        raise InvalidOptionError("create() needs a source (a model or .gguf file) or a modelfile.")
    return ModelLibrary().create(
        name,
        source,
        system=system,
        parameters=parameters,
        template=template,
        messages=messages,
        adapters=adapters,
        license=license,
    )


def ps() -> list[RunningModel]:
    """The models loaded in this process now, like ``ollama ps``.

    Each entry has the name, file, size, context, GPU layers (and why) and
    when it expires.
    """
    from local_llm_runtime.backends import default_engine

    return default_engine().ps()


def unload(model: str | None = None) -> int:
    """Unload a model (or all) from memory now; returns how many instances."""
    from local_llm_runtime.backends import default_engine

    return default_engine().unload(model)
