"""Which backend serves a process: the composition root of the runtime.

Adapters, the CLI and the server hold an :class:`~local_llm_runtime.interface.EngineProtocol`;
this module is the one place that turns configuration into a concrete backend.
Backends are named by import path (like entry points), so the core packages
never import a backend statically and a backend's heavy imports (``llama_cpp``)
happen on first use only.

Backends:

* ``llama`` -- in-process llama.cpp (:class:`local_llm_runtime.llama.LlamaEngine`),
  the default.
* ``remote`` -- an existing OpenAI-compatible or Ollama server
  (:class:`local_llm_runtime.remote.RemoteEngine`): the default when
  ``LOCAL_LLM_BASE_URL`` is set, and what an adapter's ``base_url=`` selects.

A new backend is one package (``local_llm_runtime/<name>/``) with a class taking
``(settings)`` that implements the interface, plus one entry in :data:`BACKENDS`.
"""

from __future__ import annotations

import importlib
import os
import threading
from typing import cast

from pydantic import SecretStr

from local_llm_runtime.errors import InvalidOptionError
from local_llm_runtime.interface import EngineProtocol
from local_llm_runtime.settings import RemoteSettings, RuntimeSettings

__all__ = ["BACKENDS", "create_engine", "default_engine", "remote_engine", "remote_settings_for"]

BACKENDS: dict[str, str] = {
    "llama": "local_llm_runtime.llama.engine:LlamaEngine",
    "remote": "local_llm_runtime.remote:RemoteEngine",
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

    Created on first call, from the environment: a remote engine
    (:func:`remote_engine`) when ``LOCAL_LLM_BASE_URL`` is set, else the
    in-process llama.cpp backend. Later calls return the same object.

    Raises:
        InvalidOptionError: For a malformed ``LOCAL_LLM_*`` remote variable (named).
    """
    global _default  # noqa: PLW0603
    with _default_lock:
        if _default is None:
            remote = RemoteSettings.from_env()
            _default = create_engine() if remote is None else remote_engine(remote)
        return _default


_remote_engines: dict[tuple[str, str, str], EngineProtocol] = {}
_remote_lock = threading.Lock()


def remote_engine(remote: RemoteSettings) -> EngineProtocol:
    """The process-wide remote engine for ``remote``: one per configuration.

    Every adapter configured with the same server, key and settings shares one
    engine (one connection pool); a different configuration gets its own.
    Construction does no I/O (the server is first contacted by a request).

    Args:
        remote: Where to send requests (see :func:`remote_settings_for`).

    Returns:
        A :class:`local_llm_runtime.remote.RemoteEngine`, created on first use.
    """
    key = (
        remote.base_url,
        remote.api_key.get_secret_value() if remote.api_key else "",
        remote.model_dump_json(exclude={"api_key"}),
    )
    with _remote_lock:
        engine = _remote_engines.get(key)
        if engine is None:
            module_name, _, class_name = BACKENDS["remote"].partition(":")
            cls = getattr(importlib.import_module(module_name), class_name)
            engine = cast(EngineProtocol, cls(RuntimeSettings.from_env(), remote=remote))
            _remote_engines[key] = engine
        return engine


def remote_settings_for(
    base_url: str, api_key: SecretStr | None = None, env: dict[str, str] | None = None
) -> RemoteSettings:
    """The remote settings of an adapter's ``base_url=`` / ``api_key=``.

    The other settings (dialect, model map, timeouts, retries) come from the
    environment's ``LOCAL_LLM_*`` variables. ``LOCAL_LLM_API_KEY`` is used only
    for the server of ``LOCAL_LLM_BASE_URL``: a key is never sent to another host
    unless given with it.

    Args:
        base_url: The server's URL (``http://gpu-box:8000/v1``, ``http://host:11434``).
        api_key: Its key, or ``None``.
        env: The environment (default ``os.environ``).

    Raises:
        InvalidOptionError: For a ``base_url`` that is not an http(s) URL, or a
            malformed ``LOCAL_LLM_*`` variable (named).
    """
    environ = dict(os.environ if env is None else env)
    same_server = (environ.get("LOCAL_LLM_BASE_URL") or "").strip().rstrip("/") == (
        base_url.strip().rstrip("/")
    )
    environ["LOCAL_LLM_BASE_URL"] = base_url
    if not same_server or api_key is not None:
        environ.pop("LOCAL_LLM_API_KEY", None)
    try:
        remote = RemoteSettings.from_env(environ)
    except InvalidOptionError as exc:
        raise InvalidOptionError(str(exc).replace("LOCAL_LLM_BASE_URL=", "base_url=")) from None
    if remote is None:
        raise InvalidOptionError("base_url is empty; pass the server's URL or None.")
    return remote if api_key is None else remote.model_copy(update={"api_key": api_key})
