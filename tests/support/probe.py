"""A minimal streaming route over the server's own mechanisms, for tests of them.

``POST /test/stream`` (NDJSON) and ``POST /test/collect`` (whole JSON) do what the
Ollama and OpenAI routes do around the engine -- :func:`parse_body`, ``admit()``,
the engine's ``achat_stream`` with the ticket's cancel event,
:func:`stream_response` / :func:`collect` -- with the smallest possible wire
format, so admission, disconnects, drain and shutdown are tested independently
of the wire APIs (whose own tests cover their formats).

Also runnable as ``python -m tests.support.probe`` : :func:`local_llm_runtime.server.run.serve`
(the real runner: bind, signals, drain, lifespan unload) over a slow
:class:`FakeEngine` with these routes added, for subprocess tests of shutdown.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from local_llm_runtime.server.app import server_state
from local_llm_runtime.server.streaming import collect, parse_body, stream_response
from local_llm_runtime.types import FinalChunk, TextDelta

__all__ = ["ProbeBody", "add_probe_routes"]


class ProbeBody(BaseModel):
    """The probe's request: a model, a prompt, engine options."""

    model_config = ConfigDict(extra="forbid")

    model: str
    prompt: str
    options: dict[str, Any] = {}


def add_probe_routes(app: FastAPI) -> FastAPI:
    """Add ``/test/stream`` and ``/test/collect`` to ``app`` (returned)."""

    @app.post("/test/stream")
    async def probe_stream(request: Request) -> Response:
        body = await parse_body(request, ProbeBody)
        state = server_state(request)
        ticket = state.admit()
        stream = state.engine.achat_stream(
            body.model,
            [{"role": "user", "content": body.prompt}],
            options=body.options,
            cancel=ticket.cancel,
        )

        async def objects() -> AsyncIterator[dict[str, Any]]:
            async for chunk in stream:
                if isinstance(chunk, TextDelta):
                    yield {"text": chunk.text, "done": False}
                elif isinstance(chunk, FinalChunk):
                    yield {"done": True, "done_reason": chunk.finish_reason}

        return await stream_response(
            request, ticket, objects(), framing="ndjson", close=stream.aclose
        )

    @app.post("/test/collect")
    async def probe_collect(request: Request) -> Response:
        body = await parse_body(request, ProbeBody)
        state = server_state(request)
        ticket = state.admit()
        result = await collect(
            request,
            ticket,
            state.engine.achat(
                body.model,
                [{"role": "user", "content": body.prompt}],
                options=body.options,
                cancel=ticket.cancel,
            ),
        )
        return JSONResponse({"text": result.text, "done_reason": result.finish_reason})

    return app


def _main() -> None:  # pragma: no cover - run in a subprocess by the tests
    import local_llm_runtime.server.run as run
    from local_llm_runtime.settings import ServerSettings
    from local_llm_runtime.testing import FakeEngine

    delay = float(os.environ.get("PROBE_CHUNK_DELAY", "0.05"))
    engine = FakeEngine(responses=[" word" * 2000], cycle=True, chunk_delay=delay)
    create_app = run.create_app

    def create_with_probe(*args: Any, **kwargs: Any) -> FastAPI:
        return add_probe_routes(create_app(*args, **kwargs))

    run.create_app = create_with_probe  # type: ignore[assignment]
    run.serve(ServerSettings.from_env(), engine=engine)


if __name__ == "__main__":  # pragma: no cover
    _main()
