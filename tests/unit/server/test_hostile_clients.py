"""What a careless or hostile client sends, and what every route must answer.

Rules tested as tables, each over every route it concerns:

* a runtime error is an answer (4xx in the API's JSON shape), not a crash: the
  server logs no "Exception in ASGI application" trace and keeps the keep-alive
  connection open for the next request;
* a request body nesting deeper than ``MAX_JSON_DEPTH`` is a 400 at parse time,
  so no recursive consumer downstream (tool schemas, grammars, templates) can
  reach Python's recursion limit (a deep tool schema was a 500);
* a field of several types (a union) fails with the field's name and what it
  may be, never pydantic's names of the union's members (``format.literal[...]``);
* ``HEAD`` works wherever ``GET`` does; the ``Bearer`` scheme is case-insensitive;
  a compressed body is a 415; a leading UTF-8 BOM is tolerated.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from local_llm_runtime.errors import (
    ContextLengthExceededError,
    InvalidOptionError,
    ModelNotFoundError,
    UnsupportedSchemaError,
)
from local_llm_runtime.server.streaming import MAX_JSON_DEPTH
from local_llm_runtime.testing import FakeEngine
from tests.support.server import ServerThread, make_app

CHAT = {"model": "m:1", "messages": [{"role": "user", "content": "hi"}], "stream": False}
OAI = {"model": "m:1", "messages": [{"role": "user", "content": "hi"}]}


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def server_log() -> Iterator[_Records]:
    """ERROR records of uvicorn and of the server while the test runs."""
    handler = _Records()
    loggers = [logging.getLogger(name) for name in ("uvicorn.error", "local_llm_runtime.server")]
    for logger in loggers:
        logger.addHandler(handler)
    yield handler
    for logger in loggers:
        logger.removeHandler(handler)


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (ModelNotFoundError("Model 'nope' not found"), 404),
        (UnsupportedSchemaError("pattern", "#/pattern", "cannot be enforced"), 400),
        (ContextLengthExceededError(5000, 64), 400),
        (InvalidOptionError("Option num_ctx=-1 must be between 1 and 2147483647"), 400),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else str(v),
)
@pytest.mark.parametrize(
    ("path", "body"),
    [("/api/chat", CHAT), ("/api/generate", {"model": "m:1", "prompt": "x", "stream": False})]
    + [("/v1/chat/completions", OAI), ("/v1/completions", {"model": "m:1", "prompt": "x"})],
)
def test_a_runtime_error_is_an_answer_no_trace_logged_and_the_connection_stays_open(
    server_log: _Records, error: Exception, status: int, path: str, body: dict[str, Any]
) -> None:
    engine = FakeEngine(responses=[error, "fine"])
    with ServerThread(make_app(engine)) as server:
        opened: list[int] = []
        with httpx.Client(
            base_url=server.url,
            timeout=30,
            event_hooks={"request": [lambda _r: opened.append(1)]},
        ) as client:
            failed = client.post(path, json=body)
            assert failed.status_code == status, failed.text
            assert "Traceback" not in failed.text
            after = client.post(path, json=body)
            assert after.status_code == 200, after.text
            pool = client._transport._pool  # type: ignore[attr-defined]
            assert len(pool.connections) == 1  # the same keep-alive connection served both
    assert [r.getMessage() for r in server_log.records if r.levelno >= logging.ERROR] == []


def test_a_client_leaving_in_the_middle_of_its_body_is_not_a_server_error(
    server_log: _Records,
) -> None:
    with ServerThread(make_app()) as server:
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.sendall(b'POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"model"')
        sock.close()
        with httpx.Client(base_url=server.url, timeout=30) as client:
            assert client.post("/api/chat", json=CHAT).status_code == 200
        assert server.app.state.server.in_flight == 0
    assert [r.getMessage() for r in server_log.records if r.levelno >= logging.ERROR] == []


def _nested(depth: int) -> Any:
    value: Any = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def _deep_schema(levels: int) -> dict[str, Any]:
    root: dict[str, Any] = {"type": "object", "properties": {}}
    node = root
    for _ in range(levels):
        child: dict[str, Any] = {"type": "object", "properties": {}}
        node["properties"]["a"] = child
        node = child
    return root


def _tool(parameters: dict[str, Any]) -> dict[str, Any]:
    return {"type": "function", "function": {"name": "f", "parameters": parameters}}


DEEP = MAX_JSON_DEPTH  # the body itself is one level; nest a value one past the limit

DEEP_BODIES: list[tuple[str, str, Any]] = [
    ("/api/chat", "options", {**CHAT, "options": {"stop": _nested(DEEP)}}),
    ("/api/chat", "format", {**CHAT, "format": _deep_schema(DEEP)}),
    ("/api/chat", "tools", {**CHAT, "tools": [_tool(_deep_schema(DEEP))]}),
    ("/api/generate", "format", {"model": "m:1", "prompt": "x", "format": _nested(DEEP)}),
    ("/api/embed", "input", {"model": "m:1", "input": _nested(DEEP)}),
    ("/api/create", "parameters", {"model": "m:1", "from": "x:1", "parameters": _nested(DEEP)}),
    ("/v1/chat/completions", "tools", {**OAI, "tools": [_tool(_deep_schema(DEEP))]}),
    ("/v1/chat/completions", "metadata", {**OAI, "metadata": _nested(DEEP)}),
    ("/v1/completions", "prompt", {"model": "m:1", "prompt": _nested(DEEP)}),
    ("/v1/embeddings", "input", {"model": "m:1", "input": _nested(DEEP)}),
]


@pytest.mark.parametrize(("path", "where", "body"), DEEP_BODIES, ids=lambda v: str(v)[:24])
def test_json_nested_past_the_limit_is_a_400_on_every_route(
    client: TestClient, path: str, where: str, body: Any
) -> None:
    response = client.post(path, content=json.dumps(body))
    assert response.status_code == 400, (where, response.text)
    error = response.json()["error"]
    message = error["message"] if path.startswith("/v1") else error
    assert f"more than {MAX_JSON_DEPTH} levels" in message
    assert client.get("/").status_code == 200


def _calls(arguments: str) -> list[dict[str, Any]]:
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": arguments}}
    return [{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [call]}]


@pytest.mark.parametrize("path", ["/api/chat", "/v1/chat/completions"])
@pytest.mark.parametrize("depth", [DEEP + 1, 100_000])
def test_deep_json_inside_a_string_of_tool_call_arguments_is_a_400(
    client: TestClient, path: str, depth: int
) -> None:
    arguments = json.dumps(_nested(depth)) if depth < 1000 else "[" * depth + "]" * depth
    body = {**(CHAT if path.startswith("/api") else OAI), "messages": _calls(arguments)}
    response = client.post(path, json=body)
    assert response.status_code == 400, response.text
    assert "arguments" in response.text


@pytest.mark.parametrize("path", ["/api/chat", "/v1/chat/completions", "/api/show"])
def test_json_too_deep_for_the_json_parser_itself_is_a_400(client: TestClient, path: str) -> None:
    response = client.post(path, content="[" * 100_000 + "]" * 100_000)
    assert response.status_code == 400, response.text


def test_a_tool_schema_just_under_the_depth_limit_still_works(client: TestClient) -> None:
    # body > tools > [0] > function > parameters: 5 levels before the schema itself
    levels = (MAX_JSON_DEPTH - 6) // 2
    body = {**OAI, "tools": [_tool(_deep_schema(levels))]}
    assert client.post("/v1/chat/completions", json=body).status_code == 200


UNIONS: list[tuple[str, dict[str, Any], str, str]] = [
    # path, body, the field named, what the message says it may be
    ("/api/chat", {**CHAT, "format": '{"type":"object"}'}, "format", "'json'"),
    ("/api/chat", {**CHAT, "keep_alive": True}, "keep_alive", "a string"),
    ("/api/embed", {"model": "m:1", "input": None}, "input", "an array"),
    (
        "/api/chat",
        {
            **CHAT,
            "messages": [
                {"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": 5}}]}
            ],
        },
        "messages.0.tool_calls.0.function.arguments",
        "an object",
    ),
    ("/v1/chat/completions", {**OAI, "stop": 5}, "stop", "an array"),
    ("/v1/chat/completions", {**OAI, "tool_choice": "bad"}, "tool_choice", "'required'"),
    (
        "/v1/chat/completions",
        {"model": "m:1", "messages": [{"role": "user", "content": 5}]},
        "messages.0.content",
        "a string",
    ),
    ("/v1/completions", {"model": "m:1", "prompt": None}, "prompt", "a string"),
    ("/v1/embeddings", {"model": "m:1", "input": {"a": 1}}, "input", "an array"),
]


@pytest.mark.parametrize(("path", "body", "field", "may_be"), UNIONS, ids=lambda v: str(v)[:30])
def test_a_union_field_error_names_the_field_not_pydantics_member_tags(
    client: TestClient, path: str, body: dict[str, Any], field: str, may_be: str
) -> None:
    response = client.post(path, json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    message = error["message"] if path.startswith("/v1") else error
    assert message.startswith(f"{field}: should be "), message
    assert may_be in message
    for tag in ("literal[", "list[", "dict[", ".str", "NamedToolChoice"):
        assert tag not in message, message
    if path.startswith("/v1"):
        assert error["param"] == field


GET_PATHS = ["/", "/api/tags", "/api/ps", "/api/version", "/v1/models"]


@pytest.mark.parametrize("path", GET_PATHS)
def test_head_answers_wherever_get_does(client: TestClient, path: str) -> None:
    get, head = client.get(path), client.head(path)
    assert head.status_code == get.status_code == 200, path
    assert head.content == b""


def test_every_get_route_of_both_apis_is_in_the_head_table() -> None:
    from local_llm_runtime.server import ollama_api, openai_api

    gets = {
        route.path
        for router in (ollama_api.router, openai_api.router)
        for route in router.routes
        if "GET" in (getattr(route, "methods", None) or ()) and "{" not in route.path  # type: ignore[attr-defined]
    }
    assert gets <= set(GET_PATHS)


@pytest.mark.parametrize(
    ("header", "allowed"),
    [
        ("Bearer s3cret", True),
        ("bearer s3cret", True),
        ("BEARER s3cret", True),
        ("Bearer   s3cret", True),
        ("Bearer s3cretx", False),
        ("Bearer wrong", False),
        ("s3cret", False),
        ("Basic s3cret", False),
        ("Bearers3cret", False),
        ("Bearer", False),
    ],
)
def test_the_bearer_scheme_is_case_insensitive_and_the_key_still_exact(
    client_for: Callable[..., TestClient], header: str, allowed: bool
) -> None:
    client = client_for(api_key="s3cret")
    for path in ("/api/version", "/v1/models"):
        response = client.get(path, headers={"Authorization": header})
        assert (response.status_code == 200) is allowed, (header, path, response.text)


@pytest.mark.parametrize("path", ["/api/chat", "/v1/chat/completions"])
@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br"])
def test_a_compressed_body_is_a_415_in_the_apis_shape(
    client: TestClient, path: str, encoding: str
) -> None:
    response = client.post(path, content=b"\x1f\x8b...", headers={"Content-Encoding": encoding})
    assert response.status_code == 415
    error = response.json()["error"]
    assert encoding in (error["message"] if path.startswith("/v1") else error)


@pytest.mark.parametrize(("path", "body"), [("/api/chat", CHAT), ("/v1/chat/completions", OAI)])
def test_a_utf8_bom_before_the_json_is_tolerated(
    client: TestClient, path: str, body: dict[str, Any]
) -> None:
    response = client.post(path, content=b"\xef\xbb\xbf" + json.dumps(body).encode())
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("path", "extra"),
    [
        ("/api/chat", {"messages": [{"role": "user", "content": "hi"}], "stream": False}),
        ("/api/chat", {"messages": []}),  # a load request
        ("/api/generate", {"prompt": "hi", "stream": False}),
        ("/api/embed", {"input": "hi"}),
        ("/api/embeddings", {"prompt": "hi"}),
    ],
)
def test_num_ctx_past_the_trained_context_is_capped_not_a_failed_load(
    tiny_gguf: Any, path: str, extra: dict[str, Any]
) -> None:
    # 2**31 - 1 made llama.cpp's context allocation fail (a 500); 10**7 would take GBs
    from local_llm_runtime.backends import create_engine
    from local_llm_runtime.settings import RuntimeSettings
    from local_llm_runtime.store.library import ModelLibrary

    runtime = RuntimeSettings.from_env()
    library = ModelLibrary(runtime)
    library.create("tiny:1", str(tiny_gguf))
    engine = create_engine()
    try:
        trained = engine.model_info("tiny:1").context_length
        assert trained
        client = TestClient(make_app(engine, library=library, runtime=runtime))
        body = {"model": "tiny:1", "options": {"num_ctx": 2**31 - 1, "num_predict": 2}, **extra}
        response = client.post(path, json=body)
        assert response.status_code == 200, response.text
        assert [m["context_length"] for m in client.get("/api/ps").json()["models"]] == [trained]
    finally:
        engine.unload()
