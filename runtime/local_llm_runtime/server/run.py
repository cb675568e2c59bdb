"""Run the app with uvicorn: bind, warn, serve, drain on SIGTERM/SIGINT.

``local-llm serve`` calls :func:`serve`. The socket is bound here first, so a
port in use is one line naming ``LOCAL_LLM_HOST`` rather than uvicorn's trace.
On SIGTERM/SIGINT the server stops accepting connections, every generation is
cancelled within a token and its response ends normally, then the models are
unloaded (the app's lifespan) and the process exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import signal
import socket
import sys
import threading
from collections.abc import Generator
from types import FrameType
from typing import TextIO

import uvicorn

from local_llm_runtime.errors import InvalidOptionError
from local_llm_runtime.interface import EngineProtocol
from local_llm_runtime.server.app import create_app
from local_llm_runtime.server.state import ServerState
from local_llm_runtime.settings import ServerSettings
from local_llm_runtime.store.library import ModelLibrary

__all__ = ["bind", "listen", "serve"]

logger = logging.getLogger("local_llm_runtime.server")

_SIGNALS = (signal.SIGINT, signal.SIGTERM)

GRACEFUL_SHUTDOWN_S = 30
"""Seconds uvicorn waits for open connections after a drain before closing them."""


class AddressInUseError(InvalidOptionError, OSError):
    """The address of ``LOCAL_LLM_HOST`` is taken (another server, or Ollama itself)."""


def listen(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A listening TCP socket (``port=0``: a free one), ready for uvicorn's ``sockets=``.

    The socket is created with ``IPPROTO_TCP`` explicitly: asyncio turns Nagle's
    algorithm off (``TCP_NODELAY``) only on connections of a socket whose ``proto`` is
    TCP, and a plain ``socket.socket()`` has ``proto`` 0. Without it every response
    written in two parts (headers, then body; each streamed token) waits ~40 ms for the
    client's delayed ACK.

    Raises:
        OSError: The address cannot be bound.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def bind(settings: ServerSettings) -> socket.socket:
    """A listening socket on ``settings``' host and port (:func:`listen`).

    Raises:
        AddressInUseError: The port is in use, or the address cannot be bound (the
            message names ``LOCAL_LLM_HOST``).
    """
    try:
        return listen(settings.host, settings.port)
    except OSError as exc:
        where = f"{settings.host}:{settings.port}"
        if exc.errno == errno.EADDRINUSE:
            raise AddressInUseError(
                f"{where} is already in use (is Ollama or another local-llm serve running?); "
                "stop it or set LOCAL_LLM_HOST to another address, e.g. 127.0.0.1:11435."
            ) from None
        raise AddressInUseError(
            f"cannot listen on {where} ({exc.strerror}); set LOCAL_LLM_HOST to an address "
            "of this machine."
        ) from None


class _DrainingServer(uvicorn.Server):
    """uvicorn's server, cancelling generations before it waits for connections.

    Two departures from :class:`uvicorn.Server`, both for a clean exit:

    * the drain runs on the event loop (``call_soon_threadsafe``), not in the
      signal handler: the handler interrupts the main thread anywhere, possibly
      inside :meth:`ServerState.admit` holding the state's (non-reentrant) lock;
    * the signal is not raised again after the graceful shutdown (uvicorn does,
      so that the default handler runs: SIGTERM would then kill the process with
      status -15 and SIGINT end in ``KeyboardInterrupt``); ``serve`` returns and
      ``local-llm serve`` exits 0, as ``ollama serve`` does.
    """

    def __init__(self, config: uvicorn.Config, state: ServerState) -> None:
        super().__init__(config)
        self.local_llm_state = state

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        original = {sig: signal.signal(sig, self.handle_exit) for sig in _SIGNALS}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if not self.should_exit:
            logger.info("shutting down: stopping %d request(s)", self.local_llm_state.in_flight)
        try:
            asyncio.get_running_loop().call_soon_threadsafe(self.local_llm_state.drain)
        except RuntimeError:  # no loop in this thread (called directly, not by a signal)
            self.local_llm_state.drain()
        super().handle_exit(sig, frame)


def _log_to_stderr(level: str) -> None:
    """Show the server's own log lines (``unloaded ...``) as uvicorn shows its own."""
    from uvicorn.logging import DefaultFormatter

    package = logging.getLogger("local_llm_runtime")
    if not any(getattr(h, "local_llm_serve", False) for h in package.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(DefaultFormatter("%(levelprefix)s %(message)s"))
        handler.local_llm_serve = True  # type: ignore[attr-defined]
        package.addHandler(handler)
        package.propagate = False
    package.setLevel(level.upper())


def serve(
    settings: ServerSettings | None = None,
    *,
    engine: EngineProtocol | None = None,
    library: ModelLibrary | None = None,
    err: TextIO | None = None,
    log_level: str = "info",
) -> None:
    """Serve until SIGTERM/SIGINT (blocks).

    Args:
        settings: Where to listen and the guards (the environment's by default).
        engine: The engine (default: the process-wide in-process engine).
        library: The model store (default: the environment's).
        err: Where the start-up warnings go (stderr).
        log_level: uvicorn's log level.

    Raises:
        AddressInUseError: The address cannot be bound.
    """
    settings = settings if settings is not None else ServerSettings.from_env()
    err = err if err is not None else sys.stderr
    sock = bind(settings)
    app = create_app(engine, library=library, settings=settings)
    if not settings.loopback and settings.api_key is None:
        err.write(
            f"Warning: listening on {settings.host}:{settings.port} with no API key: anyone who "
            "can reach this address can use your models; set LOCAL_LLM_API_KEY.\n"
        )
    err.write(f"local-llm serving Ollama and OpenAI APIs on {settings.url}\n")
    config = uvicorn.Config(
        app,
        log_level=log_level,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        server_header=False,
    )
    _log_to_stderr(log_level)
    server = _DrainingServer(config, app.state.server)
    server.run(sockets=[sock])
