"""The server under load and faults, over a slow FakeEngine and real HTTP.

The routes are ``tests.support.probe``'s: the server's own mechanisms
(``parse_body``, ``admit``, ``stream_response``, ``collect``) around the
engine, so these tests hold for every route built on them.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from local_llm_runtime.errors import (
    ContextLengthExceededError,
    InvalidOptionError,
    ModelNotFoundError,
)
from local_llm_runtime.server.state import ServerState
from local_llm_runtime.settings import RuntimeSettings
from local_llm_runtime.testing import FakeEngine
from tests.support.probe import add_probe_routes
from tests.support.server import ServerThread, make_app

LONG = " word" * 1000
"""1000 fake tokens: at 0.02 s a token, 20 s unless cancelled."""


def wait_until(predicate: Callable[[], bool], what: str, limit: float = 15.0) -> None:
    """Poll ``predicate`` (a bound, not a timing assertion: the test fails only on a hang)."""
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.01)


@pytest.fixture
def serve() -> Iterator[Callable[..., tuple[ServerThread, ServerState, FakeEngine]]]:
    """``serve(engine, num_parallel=, max_queue=)``: a probe server on a free port."""
    servers: list[ServerThread] = []

    def start(
        engine: FakeEngine, *, num_parallel: int = 4, max_queue: int = 0, **settings: Any
    ) -> tuple[ServerThread, ServerState, FakeEngine]:
        runtime = RuntimeSettings.from_env().model_copy(update={"num_parallel": num_parallel})
        app = add_probe_routes(make_app(engine, runtime=runtime, max_queue=max_queue, **settings))
        server = ServerThread(app).__enter__()
        servers.append(server)
        return server, app.state.server, engine

    yield start
    for server in servers:
        server.__exit__(None, None, None)


def body(prompt: str = "hi", **options: Any) -> dict[str, Any]:
    return {"model": "m", "prompt": prompt, "options": options}


def test_dropped_streams_cancel_at_once_free_their_slots_and_the_others_finish(serve: Any) -> None:
    server, state, engine = serve(
        FakeEngine(responses=[LONG], cycle=True, chunk_delay=0.02), num_parallel=4
    )
    with (
        httpx.Client(base_url=server.url, timeout=30) as a,
        httpx.Client(base_url=server.url, timeout=30) as b,
    ):
        # the kept streams stop by themselves after 20 tokens; the dropped ones never would
        kept = [a.stream("POST", "/test/stream", json=body(num_predict=20)) for _ in range(2)]
        dropped = [
            httpx.Client(base_url=server.url, timeout=30).stream(
                "POST", "/test/stream", json=body()
            )
            for _ in range(2)
        ]
        responses = [cm.__enter__() for cm in [*kept, *dropped]]
        lines = [r.iter_lines() for r in responses]
        for it in lines:
            assert json.loads(next(it))["done"] is False  # all 4 are generating
        assert state.in_flight == 4 and engine.open_streams == 4
        # a 5th is refused: num_parallel 4 + max_queue 0
        assert b.post("/test/stream", json=body()).status_code == 503
        for cm in dropped:
            cm.__exit__(None, None, None)  # closes the connection mid-stream
        wait_until(lambda: state.in_flight == 2, "the dropped streams released their tickets")
        wait_until(lambda: engine.open_streams == 2, "the dropped generations stopped")
        for it in lines[:2]:
            last = [json.loads(line) for line in it][-1]
            assert last == {"done": True, "done_reason": "length"}
        for cm in kept:
            cm.__exit__(None, None, None)
        wait_until(lambda: state.in_flight == 0 and engine.open_streams == 0, "all released")
        # the 4 slots are free again: 4 new requests are served, none refused
        results = [b.post("/test/collect", json=body(num_predict=3)) for _ in range(4)]
        assert [r.status_code for r in results] == [200] * 4
        assert all(r.json()["done_reason"] == "length" for r in results)


def test_a_client_leaving_a_whole_response_cancels_it(serve: Any) -> None:
    server, state, engine = serve(FakeEngine(responses=[LONG], cycle=True, chunk_delay=0.02))

    async def leave() -> None:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            task = asyncio.create_task(client.post("/test/collect", json=body()))
            await asyncio.to_thread(wait_until, lambda: engine.open_streams == 1, "started")
            task.cancel()  # closes the connection before the answer
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(leave())
    wait_until(lambda: state.in_flight == 0, "the ticket was released")
    wait_until(lambda: engine.open_streams == 0, "the generation was cancelled")


def test_64_concurrent_clients_are_served_or_refused_with_503_nothing_else(serve: Any) -> None:
    server, state, engine = serve(
        FakeEngine(responses=["a b c d e f g h"], cycle=True, chunk_delay=0.01),
        num_parallel=4,
        max_queue=4,
    )

    async def one(client: httpx.AsyncClient, i: int) -> tuple[int, Any]:
        if i % 2:
            response = await client.post("/test/collect", json=body())
            return response.status_code, response.json()
        async with client.stream("POST", "/test/stream", json=body()) as response:
            if response.status_code != 200:
                await response.aread()
                return response.status_code, response.json()
            objects = [json.loads(line) async for line in response.aiter_lines()]
            return 200, objects[-1]

    async def burst() -> list[tuple[int, Any]]:
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(base_url=server.url, timeout=60, limits=limits) as client:
            return await asyncio.wait_for(
                asyncio.gather(*(one(client, i) for i in range(64))), timeout=120
            )

    results = asyncio.run(burst())
    statuses = [status for status, _ in results]
    assert set(statuses) <= {200, 503}, statuses
    assert statuses.count(200) >= 8  # at least num_parallel + max_queue got in
    for status, answer in results:
        if status == 200:
            assert answer["done_reason"] == "stop"
            assert answer.get("done", True) is True
        else:
            assert "server busy" in answer["error"]
    assert state.in_flight == 0 and engine.open_streams == 0
    assert [m.name for m in engine.ps()] == ["m"]
    # and the server still serves
    assert httpx.post(server.url + "/test/collect", json=body()).status_code == 200


@pytest.mark.parametrize(
    ("content", "status", "names"),
    [
        (b'{"model": "m", "prompt": ', 400, "invalid JSON"),
        (b"[1, 2]", 400, "JSON object"),
        (b"", 400, "missing request body"),
        (b'{"model": "m", "prompt": 3}', 400, "prompt"),
        (b'{"model": "m", "prompt": "hi", "bogus": 1}', 400, "bogus"),
        (b'{"model": "m", "prompt": "\xff\xfe"}', 400, "UTF-8"),
        (b'{"model": "m", "prompt": "' + b"x" * 20000 + b'"}', 413, "LOCAL_LLM_MAX_BODY"),
        (b'{"model": "nope", "prompt": "hi"}', 404, "nope"),
        (b'{"model": "m", "prompt": "hi", "options": {"temperature": "hot"}}', 400, "temperature"),
    ],
)
@pytest.mark.parametrize("path", ["/test/stream", "/test/collect"])
def test_malformed_requests_get_their_4xx_and_the_server_keeps_serving(
    serve: Any, path: str, content: bytes, status: int, names: str
) -> None:
    engine = FakeEngine(responses=["ok"], cycle=True, models={"m": FakeEngine().model_info("m")})
    server, state, _ = serve(engine, max_body_bytes=16 * 1024)
    response = httpx.post(server.url + path, content=content)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert names in response.json()["error"]
    assert "Traceback" not in response.text
    assert state.in_flight == 0
    assert httpx.post(server.url + path, json=body()).status_code == 200


def test_drain_ends_open_streams_with_their_final_object_and_refuses_new_ones(
    serve: Any,
) -> None:
    server, state, engine = serve(FakeEngine(responses=[LONG], cycle=True, chunk_delay=0.02))
    with httpx.Client(base_url=server.url, timeout=30) as client:
        with client.stream("POST", "/test/stream", json=body()) as response:
            lines = response.iter_lines()
            assert json.loads(next(lines))["done"] is False
            state.drain()  # what SIGTERM/SIGINT do (run.py schedules it on the loop)
            rest = [json.loads(line) for line in lines]
        assert rest[-1] == {"done": True, "done_reason": "cancelled"}
        refused = client.post("/test/stream", json=body())
        assert refused.status_code == 503 and "shutting down" in refused.json()["error"]
    assert state.in_flight == 0 and engine.open_streams == 0


@pytest.mark.parametrize(
    ("error", "status", "message"),
    [
        (ModelNotFoundError("model 'x' not found, try pulling it first"), 404, "not found"),
        (ContextLengthExceededError(5000, 4096), 400, "num_ctx"),
        (InvalidOptionError("top_k must be >= 0"), 400, "top_k"),
        (RuntimeError("secret internals"), 500, "internal server error"),
    ],
)
@pytest.mark.parametrize("path", ["/test/stream", "/test/collect"])
def test_an_error_before_the_first_object_is_its_own_status_not_a_500(
    serve: Any, path: str, error: Exception, status: int, message: str
) -> None:
    # the engine raises when the stream is first read, inside until_disconnect's task group
    server, state, _ = serve(FakeEngine(responses=[error, "ok"]))
    response = httpx.post(server.url + path, json=body())
    assert response.status_code == status, response.text
    assert message in response.json()["error"]
    assert "secret" not in response.text
    assert state.in_flight == 0
    assert httpx.post(server.url + path, json=body()).status_code == 200
