"""Every JSON schema a caller hands over is checked against its meta-schema before use.

Tool ``parameters`` and the response ``format`` reach grammars, templates and argument
validation; a malformed one (``{"type": "wat"}``) used to pass silently (the grammar then
allowed anything, or a forced call failed later with a confusing error). Same rule for
the real engine, the FakeEngine and, through them, every adapter and both HTTP APIs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from local_llm_runtime import InvalidOptionError, LlamaEngine
from local_llm_runtime.interface import EngineProtocol
from local_llm_runtime.prompt.tool_schema import check_json_schema, normalize_tools
from local_llm_runtime.testing import FakeEngine
from tests.support.server import make_app

BAD_SCHEMAS: list[Any] = [
    {"type": 5},
    {"type": "wat"},
    {"type": "object", "properties": {"a": {"type": "strng"}}},
    {"type": "object", "required": "a"},
    {"type": "array", "minItems": -1},
    {"type": "string", "pattern": 7},
    {"enum": "abc"},
]
GOOD_SCHEMAS: list[Any] = [
    "json",
    True,
    {},
    {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
    {"type": ["string", "null"]},
    {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object"},
]


@pytest.mark.parametrize("schema", BAD_SCHEMAS)
def test_malformed_schemas_are_refused_naming_the_place(schema: Any) -> None:
    with pytest.raises(InvalidOptionError, match=r"format is not a valid JSON schema.*\(at #"):
        check_json_schema(schema, "format")


@pytest.mark.parametrize("schema", GOOD_SCHEMAS)
def test_valid_schemas_pass(schema: Any) -> None:
    check_json_schema(schema, "format")


def test_a_schema_that_is_no_object_is_refused() -> None:
    with pytest.raises(InvalidOptionError, match="must be a JSON schema"):
        check_json_schema("yaml", "format")


def _tool(name: str, parameters: Any = None) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "parameters": parameters}}


@pytest.mark.parametrize(
    ("tools", "match"),
    [
        ([_tool("")], "needs a name"),
        ([_tool("   ")], "needs a name"),
        ([_tool("f"), _tool("f")], "Two tools are named 'f'"),
        ([_tool("f", {"type": "object", "properties": {"a": {"type": "wat"}}})], "Tool 'f'"),
        ([_tool("f", {"type": "object", "required": "a"})], "not a valid JSON schema"),
    ],
)
def test_malformed_tools_are_refused(tools: list[dict[str, Any]], match: str) -> None:
    with pytest.raises(InvalidOptionError, match=match):
        normalize_tools(tools)


@pytest.fixture(params=["fake", "llama"])
def engine(request: pytest.FixtureRequest, tiny_gguf: Path) -> Iterator[tuple[EngineProtocol, str]]:
    if request.param == "fake":
        yield FakeEngine(responses=["{}"], cycle=True), "m"
        return
    real = LlamaEngine()
    yield real, str(tiny_gguf)
    real.unload()


def test_every_engine_refuses_before_any_load(engine: tuple[EngineProtocol, str]) -> None:
    eng, model = engine
    messages = [{"role": "user", "content": "hi"}]
    bad_tool = [_tool("f", {"type": "object", "properties": {"a": {"type": "wat"}}})]
    calls: list[Callable[[], object]] = [
        lambda: eng.chat(model, messages, format={"type": 5}),
        lambda: eng.generate(model, "hi", format={"type": "wat"}),
        lambda: eng.chat(model, messages, tools=bad_tool),
        lambda: eng.chat(model, messages, tools=[_tool("f"), _tool("f")]),
    ]
    for call in calls:
        with pytest.raises(InvalidOptionError):
            call()
    assert eng.ps() == []


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/chat", {"model": "m", "messages": [{"role": "user", "content": "hi"}], "format": {"type": 5}}),
        ("/api/generate", {"model": "m", "prompt": "hi", "format": {"type": "wat"}}),
        ("/api/chat", {"model": "m", "messages": [{"role": "user", "content": "hi"}],
                       "tools": [_tool("f", {"type": "object", "properties": {"a": {"type": "wat"}}})]}),
        ("/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "hi"}],
                                  "tools": [_tool("f", {"type": "object", "properties": {"a": {"type": "wat"}}})]}),
        ("/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "hi"}],
                                  "tools": [_tool("f"), _tool("f")]}),
        ("/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "hi"}],
                                  "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": 5}}}}),
    ],
)  # fmt: skip
@pytest.mark.parametrize("stream", [False, True])
def test_both_apis_answer_400(path: str, body: dict[str, Any], stream: bool) -> None:
    with TestClient(make_app(), raise_server_exceptions=False) as client:
        response = client.post(path, json={**body, "stream": stream})
        assert response.status_code == 400, response.text
        assert "schema" in response.text or "Two tools" in response.text
