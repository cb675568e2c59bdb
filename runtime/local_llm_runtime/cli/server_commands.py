"""``local-llm serve``, ``ps`` and ``stop``: start a server, or talk to a running one.

``ps`` and ``stop`` are clients of the server at ``LOCAL_LLM_HOST`` (as ``ollama ps``
and ``ollama stop`` are of ``OLLAMA_HOST``), sending ``LOCAL_LLM_API_KEY`` when set.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from typing import Any, TextIO

from local_llm_runtime.cli._format import human_size
from local_llm_runtime.errors import LocalLLMError, ModelNotFoundError
from local_llm_runtime.settings import ServerSettings
from local_llm_runtime.store.library import ModelLibrary

__all__ = ["ServerUnreachableError", "cmd_ps", "cmd_serve", "cmd_stop", "request"]


class ServerUnreachableError(LocalLLMError, ConnectionError):
    """No server answers at ``LOCAL_LLM_HOST``."""


def cmd_serve(lib: ModelLibrary, _args: argparse.Namespace, _out: TextIO) -> None:
    """Serve the Ollama and OpenAI APIs until SIGTERM/SIGINT."""
    settings = ServerSettings.from_env()
    try:
        from local_llm_runtime.server.run import serve
    except ImportError as exc:
        raise LocalLLMError(
            f"local-llm serve needs the server extra ({exc.name} is missing): "
            "pip install 'local-llm-integrations[server]'"
        ) from None
    from local_llm_runtime.cli.main import make_engine

    serve(settings, engine=make_engine(lib), library=lib, err=sys.stderr)


def request(method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """Call the server at ``LOCAL_LLM_HOST``; its JSON answer.

    Raises:
        ServerUnreachableError: Nothing listens there.
        ModelNotFoundError: The server answered 404.
        LocalLLMError: Any other error status (the server's message).
    """
    import httpx  # here: the other commands do not pay for its import

    settings = ServerSettings.from_env()
    headers = {}
    if settings.api_key is not None:
        headers["Authorization"] = f"Bearer {settings.api_key.get_secret_value()}"
    try:
        response = httpx.request(
            method, settings.url + path, json=body, headers=headers, timeout=60.0
        )
    except httpx.HTTPError:
        raise ServerUnreachableError(
            f"could not connect to a local-llm server at {settings.url} (LOCAL_LLM_HOST); "
            "start one with `local-llm serve`."
        ) from None
    if response.status_code >= 400:
        try:
            message = response.json().get("error") or response.text
        except ValueError:
            message = response.text
        if response.status_code == 404:
            raise ModelNotFoundError(str(message))
        raise LocalLLMError(f"the server answered {response.status_code}: {message}")
    return response.json() if response.content else None


def _until(expires_at: str | None) -> str:
    if not expires_at:
        return "Forever"
    try:
        moment = datetime.fromisoformat(expires_at.replace("Z", "+00:00"))
    except ValueError:
        return expires_at
    seconds = int((moment - datetime.now(timezone.utc)).total_seconds())
    if seconds > 10 * 365 * 86400:
        return "Forever"
    if seconds <= 1:
        return "Stopping..."
    minutes, secs = divmod(seconds, 60)
    return f"{minutes} minutes from now" if minutes else f"{secs} seconds from now"


def cmd_ps(_lib: ModelLibrary, _args: argparse.Namespace, out: TextIO) -> None:
    """The models a running server has loaded (``NAME ID SIZE PROCESSOR CONTEXT UNTIL``)."""
    from local_llm_runtime.cli.main import _table

    models = request("GET", "/api/ps")["models"]
    rows = [["NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL"]]
    for m in models:
        size, vram = int(m.get("size") or 0), int(m.get("size_vram") or 0)
        processor = "100% CPU"
        if size and vram:
            gpu = round(100 * vram / size)
            processor = "100% GPU" if gpu >= 100 else f"{100 - gpu}%/{gpu}% CPU/GPU"
        rows.append(
            [
                m["name"],
                (m.get("digest") or "")[:12],
                human_size(size),
                processor,
                str(m.get("context_length") or ""),
                _until(m.get("expires_at")),
            ]
        )
    _table(rows, out)


def cmd_stop(_lib: ModelLibrary, args: argparse.Namespace, out: TextIO) -> None:
    """Unload a model from a running server now (``keep_alive: 0``, as ``ollama stop``)."""
    models = request("GET", "/api/ps")["models"]
    running = {m["name"] for m in models} | {m.get("model", "") for m in models}
    if args.name not in running:
        raise ModelNotFoundError(f"couldn't find model '{args.name}' to stop: it is not loaded.")
    request("POST", "/api/generate", {"model": args.name, "keep_alive": 0})
    out.write(f"stopped '{args.name}'\n")
