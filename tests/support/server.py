"""Servers for tests: the app over any engine, in-process or on a free loopback port.

* :func:`make_app` -- the ASGI app over an engine (a ``FakeEngine`` by default) and
  the test's store; use with ``starlette.testclient.TestClient`` or
  ``httpx.ASGITransport``.
* :class:`ServerThread` -- the same app served by uvicorn on ``127.0.0.1:<free
  port>`` in a thread, for the official clients (``ollama``, ``openai``, LangChain,
  LlamaIndex) that need a real URL. It stops itself on ``__exit__``.
"""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType
from typing import Any

import uvicorn
from fastapi import FastAPI

from local_llm_runtime.interface import EngineProtocol
from local_llm_runtime.server import create_app
from local_llm_runtime.server.run import listen
from local_llm_runtime.settings import RuntimeSettings, ServerSettings
from local_llm_runtime.store.library import ModelLibrary
from local_llm_runtime.testing import FakeEngine

__all__ = ["ServerThread", "free_port", "make_app"]


def make_app(
    engine: EngineProtocol | None = None,
    *,
    library: ModelLibrary | None = None,
    runtime: RuntimeSettings | None = None,
    **settings: Any,
) -> FastAPI:
    """The server app over ``engine`` (a cycling ``FakeEngine`` answering "Hello!" by default)."""
    engine = engine if engine is not None else FakeEngine(responses=["Hello!"], cycle=True)
    runtime = runtime if runtime is not None else RuntimeSettings.from_env()
    library = library if library is not None else ModelLibrary(runtime)
    return create_app(engine, library=library, settings=ServerSettings(**settings), runtime=runtime)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ServerThread:
    """Serve an app with uvicorn on a free loopback port, in a daemon thread.

    Example::

        with ServerThread(make_app(engine)) as server:
            ollama.Client(host=server.url).chat(...)
    """

    def __init__(self, app: FastAPI, *, log_level: str = "warning") -> None:
        self.app = app
        self.sock = listen("127.0.0.1", 0)  # as `local-llm serve` binds (TCP_NODELAY)
        self.port: int = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=5)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.app.state.server.drain()
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()
