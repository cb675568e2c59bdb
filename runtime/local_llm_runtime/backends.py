"""Which backend serves a process: the composition root of the runtime.

Adapters, the CLI and the server hold an :class:`~local_llm_runtime.interface.EngineProtocol`;
this module is the one place that turns configuration into a concrete backend.
Backends are named by import path (like entry points), so the core packages
never import a backend statically and a backend's heavy imports (``llama_cpp``)
happen on first use only.

Backends:

* ``llama`` -- in-process llama.cpp (:class:`local_llm_runtime.llama.LlamaEngine`),
  the default.

A new backend is one package (``local_llm_runtime/<name>/``) with a class taking
``(settings)`` that implements the interface, plus one entry in :data:`BACKENDS`.
"""

from __future__ import annotations

import importlib
import threading
from typing import cast

from local_llm_runtime.errors import InvalidOptionError
from local_llm_runtime.interface import EngineProtocol
from local_llm_runtime.settings import RuntimeSettings

__all__ = ["BACKENDS", "create_engine", "default_engine"]

BACKENDS: dict[str, str] = {
    "llama": "local_llm_runtime.llama.engine:LlamaEngine",
}
"""Backend name -> ``module:class`` of its engine (constructed as ``cls(settings)``)."""

_default: EngineProtocol | None = None
_default_lock = threading.Lock()


def create_engine(
    backend: str = "llama", settings: RuntimeSettings | None = None
) -> EngineProtocol:
    """A new engine of the named backend (no model is loaded; no I/O).

    Args:
        backend: A key of :data:`BACKENDS` (default ``llama``, in-process).
        settings: Runtime settings (the environment when omitted).

    Raises:
        InvalidOptionError: For an unknown backend name (the known ones are listed).
    """
    target = BACKENDS.get(backend)
    if target is None:
        raise InvalidOptionError(
            f"Unknown backend {backend!r}; known backends: {', '.join(sorted(BACKENDS))}."
        )
    module_name, _, class_name = target.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cast(EngineProtocol, cls(settings or RuntimeSettings.from_env()))


def default_engine() -> EngineProtocol:
    """The process-wide engine every adapter shares (one pool, one load per model).

    Created on first call, from the environment (today: the in-process
    llama.cpp backend); later calls return the same object.
    """
    global _default  # noqa: PLW0603
    with _default_lock:
        if _default is None:
            _default = create_engine()
        return _default
