"""The ASGI application: both wire APIs over one engine, with the server's guards.

:func:`create_app` builds a FastAPI app from an engine (any
:class:`~local_llm_runtime.interface.EngineProtocol`: the in-process llama.cpp
engine, or :class:`~local_llm_runtime.testing.FakeEngine` in tests), a model
store and :class:`~local_llm_runtime.settings.ServerSettings`. It does no I/O;
the engine loads models on the first request, and the lifespan's end unloads them.

Guards, outermost first: CORS (``LOCAL_LLM_ORIGINS`` plus loopback origins;
preflight needs no key), the API key (``Authorization: Bearer``, compared with
:func:`hmac.compare_digest`; 401 otherwise), the body size limit (413 from the
``Content-Length`` header or while reading). Every error is a JSON body in the
shape of its API (:mod:`local_llm_runtime.server.errors`), never a trace.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from local_llm_runtime import __version__
from local_llm_runtime.errors import LocalLLMError
from local_llm_runtime.interface import EngineProtocol
from local_llm_runtime.server.errors import HTTPError, error_response, status_of
from local_llm_runtime.server.state import (
    ServerState,
    release_request_tickets,
    request_tickets,
)
from local_llm_runtime.server.streaming import ClientDisconnected, describe_errors
from local_llm_runtime.settings import RuntimeSettings, ServerSettings
from local_llm_runtime.store.library import ModelLibrary

__all__ = ["create_app", "server_state"]

logger = logging.getLogger("local_llm_runtime.server")

_LOOPBACK_ORIGINS = r"https?://(localhost|127\.0\.0\.1|\[::1\]|0\.0\.0\.0)(:\d+)?"
"""Browser origins always allowed, as Ollama allows localhost and 127.0.0.1 by default."""


def server_state(request: Request) -> ServerState:
    """The :class:`ServerState` of the app serving ``request``."""
    state: ServerState = request.app.state.server
    return state


class _BodyTooLarge(StarletteHTTPException):
    pass


def _bearer(value: bytes) -> bytes:
    """An ``Authorization`` header normalized to ``Bearer <token>``.

    The scheme is case-insensitive and the spaces around the token are not part
    of it (RFC 9110 section 11.1), so ``bearer  KEY`` is ``Bearer KEY``.
    """
    scheme, _, token = value.strip().partition(b" ")
    if scheme.lower() != b"bearer":
        return value
    return b"Bearer " + token.strip()


class GuardMiddleware:
    """API key and body size checks, as pure ASGI (streams pass through untouched)."""

    def __init__(self, app: ASGIApp, settings: ServerSettings) -> None:
        self.app = app
        self.limit = settings.max_body_bytes
        key = settings.api_key.get_secret_value() if settings.api_key else None
        self.expected = f"Bearer {key}".encode() if key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        headers = dict(scope.get("headers") or [])
        if self.expected is not None and not hmac.compare_digest(
            _bearer(headers.get(b"authorization", b"")), self.expected
        ):
            response = error_response(
                path,
                401,
                "missing or wrong API key: send 'Authorization: Bearer <LOCAL_LLM_API_KEY>'",
                headers={"WWW-Authenticate": "Bearer"},
            )
            await response(scope, receive, send)
            return
        encoding = headers.get(b"content-encoding", b"identity").strip().lower()
        if encoding not in (b"", b"identity"):
            message = (
                f"Content-Encoding {encoding.decode('latin-1')!r} is not supported: "
                "send the JSON body uncompressed"
            )
            await error_response(path, 415, message, code="unsupported_media_type")(
                scope, receive, send
            )
            return
        length = headers.get(b"content-length")
        if length is not None:
            try:
                too_large = int(length) > self.limit
            except ValueError:
                await error_response(path, 400, "invalid Content-Length header")(
                    scope, receive, send
                )
                return
            if too_large:
                await self._too_large(path)(scope, receive, send)
                return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise _BodyTooLarge(413, self._message())
            return message

        with request_tickets():  # a ticket the route failed to hand on is released here
            await self.app(scope, limited_receive, send)

    def _message(self) -> str:
        return f"request body too large: the limit is {self.limit} bytes (LOCAL_LLM_MAX_BODY)"

    def _too_large(self, path: str) -> Response:
        return error_response(path, 413, self._message(), code="request_too_large")


def create_app(
    engine: EngineProtocol | None = None,
    *,
    library: ModelLibrary | None = None,
    settings: ServerSettings | None = None,
    runtime: RuntimeSettings | None = None,
) -> FastAPI:
    """The ASGI app of ``local-llm serve`` (no I/O, no model loaded).

    Args:
        engine: The engine requests run on (default: the process-wide one of
            :func:`local_llm_runtime.backends.default_engine`, looked up now).
        library: The model store for ``tags``/``show``/``pull``/``delete``/``copy``/
            ``create`` (default: from ``runtime``).
        settings: Server settings (default: the environment's).
        runtime: Runtime settings (default: ``library``'s, else the environment's).

    Returns:
        A FastAPI application; its state holds a
        :class:`~local_llm_runtime.server.state.ServerState`.
    """
    from local_llm_runtime.server import ollama_api, openai_api

    settings = settings if settings is not None else ServerSettings.from_env()
    if library is None:
        library = ModelLibrary(runtime)
    runtime = runtime if runtime is not None else library.settings
    if engine is None:
        from local_llm_runtime.backends import default_engine

        engine = default_engine()
    state = ServerState(engine=engine, library=library, settings=settings, runtime=runtime)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        state.drain()
        unloaded = await anyio.to_thread.run_sync(state.engine.unload)
        logger.info("unloaded %d model instance(s)", unloaded)

    app = FastAPI(
        title="local-llm",
        version=__version__,
        summary="Ollama's and OpenAI's wire APIs over the local-llm engine.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.server = state

    @app.exception_handler(HTTPError)
    async def _http_error(request: Request, exc: HTTPError) -> Response:
        release_request_tickets()
        return error_response(request, exc.status, exc.message, param=exc.param, code=exc.code)

    @app.exception_handler(StarletteHTTPException)
    async def _starlette_error(request: Request, exc: StarletteHTTPException) -> Response:
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = f"no route {request.method} {request.url.path}"
        return error_response(request, exc.status_code, message, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        errors = [
            {**e, "loc": tuple(p for p in e.get("loc", ()) if p not in ("body", "path"))}
            for e in exc.errors()
        ]
        message, where = describe_errors(errors)
        return error_response(request, 400, message, param=where)

    @app.exception_handler(ClientDisconnected)
    async def _gone(_request: Request, _exc: ClientDisconnected) -> Response:
        return Response(status_code=499)  # nobody reads it (nginx's "client closed request")

    @app.exception_handler(ClientDisconnect)
    async def _gone_reading(_request: Request, _exc: ClientDisconnect) -> Response:
        return Response(status_code=499)  # the client left while sending its body

    async def _unexpected(request: Request, exc: Exception) -> Response:
        release_request_tickets()
        status, code = status_of(exc)
        if status >= 500:
            logger.error("%s %s failed: %r", request.method, request.url.path, exc, exc_info=exc)
        message = str(exc) if isinstance(exc, LocalLLMError) else "internal server error"
        return error_response(request, status, message, code=code)

    # Runtime errors are answers (404 unknown model, 400 bad schema...): handled by
    # class, so Starlette does not re-raise them to uvicorn, which would log each
    # one as "Exception in ASGI application" with a trace. ``Exception`` (a bug)
    # still reaches uvicorn's log after its 500 is sent.
    app.add_exception_handler(LocalLLMError, _unexpected)
    app.add_exception_handler(Exception, _unexpected)

    @app.get("/", include_in_schema=False)
    @app.head("/", include_in_schema=False)
    async def health() -> Response:
        """Ollama's health check: 200 ``Ollama is running`` (clients test the text)."""
        return Response("Ollama is running", media_type="text/plain")

    for router in (ollama_api.router, openai_api.router):
        for route in router.routes:  # HEAD wherever GET is, as Ollama's router and HTTP allow
            if isinstance(route, APIRoute) and route.methods and "GET" in route.methods:
                route.methods.add("HEAD")
        app.include_router(router)

    app.add_middleware(GuardMiddleware, settings=settings)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=[o for o in settings.origins if o != "*"],
        allow_origin_regex=".*" if "*" in settings.origins else _LOOPBACK_ORIGINS,
        allow_methods=["GET", "POST", "DELETE", "HEAD", "OPTIONS"],
        allow_headers=["*"],
    )
    return app
