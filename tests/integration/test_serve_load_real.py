"""The server over the real engine and demo model: dropped streams and a burst of clients.

One module-scoped server (``num_parallel=4``, ``max_queue=4``) over
``create_engine()`` with the demo model registered as ``qwen2.5-coder:0.5b``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from local_llm_runtime.backends import create_engine
from local_llm_runtime.server import create_app
from local_llm_runtime.server.state import ServerState
from local_llm_runtime.settings import RuntimeSettings, ServerSettings
from local_llm_runtime.store.library import ModelLibrary
from tests.support.server import ServerThread

NAME = "qwen2.5-coder:0.5b"


@pytest.fixture(scope="module")
def served(
    demo_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerThread, ServerState]]:
    home = tmp_path_factory.mktemp("serve-home")
    runtime = RuntimeSettings.from_env().model_copy(update={"home": home, "num_parallel": 4})
    library = ModelLibrary(runtime)
    library.create(NAME, str(demo_model))
    engine = create_engine(settings=runtime)
    app = create_app(engine, library=library, settings=ServerSettings(max_queue=4), runtime=runtime)
    with ServerThread(app) as server:
        yield server, app.state.server
    engine.unload()


def chat(tokens: int, prompt: str = "Count from 1 to 100.") -> dict[str, Any]:
    return {
        "model": NAME,
        "messages": [{"role": "user", "content": prompt}],
        "options": {"temperature": 0, "num_predict": tokens, "num_ctx": 512},
    }


def wait_until(predicate: Any, what: str, limit: float = 120.0) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.02)


def test_drop_2_of_4_streams_the_others_finish_and_the_slots_are_reused(
    served: tuple[ServerThread, ServerState],
) -> None:
    server, state = served
    kept_cms = [
        httpx.stream("POST", server.url + "/api/chat", json=chat(16), timeout=300) for _ in range(2)
    ]
    dropped_cms = [
        httpx.stream("POST", server.url + "/api/chat", json=chat(2000), timeout=300)
        for _ in range(2)
    ]
    responses = [cm.__enter__() for cm in [*kept_cms, *dropped_cms]]
    lines = [r.iter_lines() for r in responses]
    for it in lines:
        assert json.loads(next(it))["done"] is False
    for cm in dropped_cms:
        cm.__exit__(None, None, None)
    wait_until(lambda: state.in_flight == 2, "the dropped streams were released")
    for it in lines[:2]:
        last = [json.loads(line) for line in it][-1]
        assert last["done"] is True and 0 < last["eval_count"] <= 16, last
    for cm in kept_cms:
        cm.__exit__(None, None, None)
    wait_until(lambda: state.in_flight == 0, "all released")

    # the engine's 4 slots are free: 4 new requests all decode (a stuck slot would hang one)
    async def four() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=300) as client:
            return await asyncio.gather(
                *(client.post("/api/chat", json={**chat(4), "stream": False}) for _ in range(4))
            )

    answers = asyncio.run(four())
    assert [a.status_code for a in answers] == [200] * 4
    assert all(a.json()["eval_count"] == 4 for a in answers)
    assert len(state.engine.ps()) == 1


def test_64_clients_complete_or_get_503_and_the_model_loads_once(
    served: tuple[ServerThread, ServerState],
) -> None:
    server, state = served

    async def burst() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(base_url=server.url, timeout=600, limits=limits) as client:
            return await asyncio.gather(
                *(client.post("/api/chat", json={**chat(2), "stream": False}) for _ in range(64))
            )

    answers = asyncio.run(burst())
    statuses = [a.status_code for a in answers]
    assert set(statuses) <= {200, 503}, statuses
    assert statuses.count(200) >= 8
    assert all("server busy" in a.json()["error"] for a in answers if a.status_code == 503)
    assert all(a.json()["done"] is True for a in answers if a.status_code == 200)
    assert state.in_flight == 0
    assert [m.name for m in state.engine.ps()] == [NAME]
    assert (
        httpx.post(
            server.url + "/api/chat", json={**chat(2), "stream": False}, timeout=300
        ).status_code
        == 200
    )
