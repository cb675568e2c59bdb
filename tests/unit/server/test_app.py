"""The server's frame: health, guards (API key, body size, CORS), error shapes, settings."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from starlette.testclient import TestClient

from local_llm_runtime.errors import InvalidOptionError
from local_llm_runtime.settings import ServerSettings, parse_host
from tests.support.server import ServerThread, make_app


def test_health_is_ollamas(client: TestClient) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.text == "Ollama is running"
    assert client.head("/").status_code == 200


def test_version(client: TestClient) -> None:
    assert client.get("/api/version").json() == {
        "version": __import__("local_llm_runtime").__version__
    }


def test_unknown_route_is_a_json_404_in_each_apis_shape(client: TestClient) -> None:
    ollama = client.get("/api/nope")
    assert ollama.status_code == 404 and isinstance(ollama.json()["error"], str)
    openai = client.get("/v1/nope")
    assert openai.status_code == 404
    assert openai.json()["error"]["type"] == "invalid_request_error"


def test_api_key_is_required_everywhere_when_set(client_for: Callable[..., TestClient]) -> None:
    client = client_for(api_key="s3cret")
    for path in ("/", "/api/version", "/v1/models"):
        response = client.get(path)
        assert response.status_code == 401, path
        assert "s3cret" not in response.text
        assert response.headers["www-authenticate"] == "Bearer"
    assert client.get("/api/version", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/api/version", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    body = client.get("/v1/models").json()
    assert body["error"]["type"] == "authentication_error"


def test_cors_preflight_needs_no_key_and_allows_loopback_origins(
    client_for: Callable[..., TestClient],
) -> None:
    client = client_for(api_key="k", origins=("https://app.example",))
    for origin, allowed in (
        ("http://localhost:3000", True),
        ("http://127.0.0.1", True),
        ("https://app.example", True),
        ("https://evil.example", False),
    ):
        response = client.options(
            "/api/chat",
            headers={"Origin": origin, "Access-Control-Request-Method": "POST"},
        )
        assert (response.headers.get("access-control-allow-origin") == origin) is allowed, origin


def test_body_limit_is_413_by_content_length(client_for: Callable[..., TestClient]) -> None:
    client = client_for(max_body_bytes=2048)
    big = b'{"model": "m", "prompt": "' + b"x" * 4096 + b'"}'
    response = client.post("/api/generate", content=big)
    assert response.status_code == 413
    assert "LOCAL_LLM_MAX_BODY" in response.json()["error"]

    assert client.get("/").status_code == 200


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, ("127.0.0.1", 11434)),
        ("", ("127.0.0.1", 11434)),
        ("0.0.0.0", ("0.0.0.0", 11434)),
        (":8080", ("127.0.0.1", 8080)),
        ("localhost:1234", ("localhost", 1234)),
        ("[::1]:9000", ("::1", 9000)),
        ("http://10.0.0.2:80", ("10.0.0.2", 80)),
        ("https://example.com", ("example.com", 443)),
    ],
)
def test_parse_host_reads_ollama_host_forms(value: str | None, expected: tuple[str, int]) -> None:
    assert parse_host(value) == expected


@pytest.mark.parametrize("value", ["ftp://x", "host:99999", "a b:1", "host:port"])
def test_parse_host_refuses_garbage_naming_the_variable(value: str) -> None:
    with pytest.raises(InvalidOptionError, match="LOCAL_LLM_HOST"):
        parse_host(value)


def test_server_settings_from_env() -> None:
    settings = ServerSettings.from_env(
        {
            "LOCAL_LLM_HOST": "0.0.0.0:1234",
            "LOCAL_LLM_ORIGINS": "https://a.example, https://b.example",
            "LOCAL_LLM_API_KEY": "s3cret-key",
            "LOCAL_LLM_MAX_QUEUE": "7",
            "LOCAL_LLM_MAX_BODY": "4096",
        }
    )
    assert (settings.host, settings.port, settings.max_queue) == ("0.0.0.0", 1234, 7)
    assert settings.origins == ("https://a.example", "https://b.example")
    assert settings.api_key is not None and "s3cret-key" not in repr(settings)
    assert settings.max_body_bytes == 4096
    assert not settings.loopback
    assert settings.url == "http://127.0.0.1:1234"
    with pytest.raises(InvalidOptionError, match="LOCAL_LLM_MAX_QUEUE"):
        ServerSettings.from_env({"LOCAL_LLM_MAX_QUEUE": "many"})


def test_server_thread_serves_on_a_free_loopback_port() -> None:
    with ServerThread(make_app()) as server:
        assert httpx.get(server.url + "/").text == "Ollama is running"


def test_connections_of_the_listening_socket_have_nagle_off() -> None:
    # asyncio sets TCP_NODELAY only on connections of a socket whose proto is TCP; without
    # it every two-part response waited ~40 ms for the client's delayed ACK.
    import socket

    with ServerThread(make_app()) as server, httpx.Client(base_url=server.url) as client:
        assert server.sock.proto == socket.IPPROTO_TCP
        assert client.get("/api/version").status_code == 200  # the connection stays open
        connections = list(server.server.server_state.connections)
        assert connections
        for protocol in connections:
            conn = protocol.transport.get_extra_info("socket")  # type: ignore[attr-defined]
            assert conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
