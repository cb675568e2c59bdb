"""The server over the REAL in-process engine on a tiny random-weight GGUF (no demo model).

What FakeEngine cannot show: a model really loaded, kept for ``keep_alive`` (Ollama's empty
request with ``keep_alive: -1`` keeps it for good), unloaded by ``keep_alive: 0``.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from local_llm_runtime.backends import create_engine
from local_llm_runtime.interface import EngineProtocol
from local_llm_runtime.settings import RuntimeSettings
from local_llm_runtime.store.library import ModelLibrary
from tests.support.server import make_app


@pytest.fixture
def real_engine() -> Iterator[EngineProtocol]:
    engine = create_engine(settings=RuntimeSettings.from_env())
    yield engine
    engine.unload()


@pytest.fixture
def real_client(real_engine: EngineProtocol, tiny_gguf: Path) -> Iterator[TestClient]:
    ModelLibrary().create("tiny:1", str(tiny_gguf))
    with TestClient(make_app(real_engine), raise_server_exceptions=False) as client:
        yield client


def _expires(client: TestClient) -> datetime | None:
    (entry,) = client.get("/api/ps").json()["models"]
    value = entry["expires_at"]
    return None if value is None else datetime.fromisoformat(value.replace("Z", "+00:00"))


@pytest.mark.parametrize("path", ["/api/generate", "/api/chat"])
def test_empty_request_loads_for_keep_alive_and_unloads_with_zero(
    real_client: TestClient, path: str
) -> None:
    body = {"model": "tiny:1", "keep_alive": "10m", "stream": False}
    loaded = real_client.post(path, json=body).json()
    assert loaded["done"] is True and loaded["done_reason"] == "load"
    expires = _expires(real_client)
    assert expires is not None
    left = expires - datetime.now(timezone.utc)
    assert timedelta(minutes=9) < left <= timedelta(minutes=10, seconds=1)

    real_client.post(path, json={**body, "keep_alive": -1})
    forever = _expires(real_client)
    assert forever is None or forever - datetime.now(timezone.utc) > timedelta(days=365)

    unloaded = real_client.post(path, json={**body, "keep_alive": 0}).json()
    assert unloaded["done_reason"] == "unload"
    assert real_client.get("/api/ps").json()["models"] == []


def test_a_real_stream_and_a_whole_answer(real_client: TestClient) -> None:
    messages = [{"role": "user", "content": "hi"}]
    body = {"model": "tiny:1", "messages": messages, "options": {"num_predict": 4, "seed": 1}}
    with real_client.stream("POST", "/api/chat", json=body) as response:
        lines = [line for line in response.iter_lines() if line]
    assert response.status_code == 200 and lines[-1].startswith("{")
    whole = real_client.post("/api/chat", json={**body, "stream": False}).json()
    assert whole["done"] is True and whole["eval_count"] <= 4
    assert whole["prompt_eval_count"] > 0 and whole["eval_duration"] >= 0


def test_a_stored_num_ctx_past_the_trained_context_still_loads(
    real_client: TestClient, tiny_gguf: Path
) -> None:
    created = real_client.post(
        "/api/create",
        json={"model": "huge:1", "from": str(tiny_gguf), "parameters": {"num_ctx": 2**31 - 1},
              "stream": False},
    )  # fmt: skip
    assert created.status_code == 200, created.text
    body = {"model": "huge:1", "prompt": "hi", "stream": False, "options": {"num_predict": 2}}
    answer = real_client.post("/api/generate", json=body)
    assert answer.status_code == 200, answer.text
    (entry,) = [m for m in real_client.get("/api/ps").json()["models"] if m["name"] == "huge:1"]
    assert entry["context_length"] == 2048
