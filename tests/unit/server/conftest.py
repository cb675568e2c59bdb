"""Fixtures of the server's unit tests: the app over a FakeEngine, in-process."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from local_llm_runtime.interface import EngineProtocol
from local_llm_runtime.testing import FakeEngine
from tests.support.server import make_app


@pytest.fixture
def engine() -> FakeEngine:
    """A FakeEngine answering "Hello!" to every request."""
    return FakeEngine(responses=["Hello!"], cycle=True)


@pytest.fixture
def client_for() -> Iterator[Callable[..., TestClient]]:
    """``client_for(engine, **server_settings)``: a TestClient of a fresh app (closed after)."""
    clients: list[TestClient] = []

    def make(engine: EngineProtocol | None = None, **settings: Any) -> TestClient:
        client = TestClient(make_app(engine, **settings), raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(client_for: Callable[..., TestClient], engine: FakeEngine) -> TestClient:
    """A TestClient of the app over ``engine``."""
    return client_for(engine)
