"""OpenAI's API over a FakeEngine: HTTP shapes, the official ``openai`` SDK, raw SSE framing."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from pydantic import BaseModel
from starlette.testclient import TestClient

from local_llm_runtime.store.library import ModelLibrary
from local_llm_runtime.testing import FakeEngine, FakeResponse
from local_llm_runtime.types import ModelInfo
from tests.support.server import ServerThread, make_app

USER = [{"role": "user", "content": "Hi"}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather of a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def post_chat(client: TestClient, **fields: Any) -> httpx.Response:
    return client.post("/v1/chat/completions", json={"model": "m", "messages": USER, **fields})


# ---- HTTP shapes ------------------------------------------------------------------


def test_chat_maps_fields_to_the_engine(client: TestClient, engine: FakeEngine) -> None:
    response = post_chat(
        client,
        tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        parallel_tool_calls=False,
        response_format={"type": "json_object"},
        stop=["END"],
        max_tokens=20,
        seed=7,
        temperature=0.1,
    )
    assert response.status_code == 200, response.text
    request = engine.last_request
    assert request.tool_choice == "get_weather"
    assert request.parallel_tool_calls is False
    assert request.format == "json"
    assert request.options == {"stop": ["END"], "num_predict": 20, "seed": 7, "temperature": 0.1}
    assert request.method == "achat"
    body = response.json()
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    assert body["choices"][0]["message"]["content"] == "Hello!"
    assert body["usage"]["total_tokens"] == (
        body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
    )


def test_json_schema_response_format_is_the_engines_schema(
    client: TestClient, engine: FakeEngine
) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    post_chat(
        client,
        response_format={"type": "json_schema", "json_schema": {"name": "A", "schema": schema}},
    )
    assert engine.last_request.format == schema


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"n": 2}, "n"),
        ({"top_logprobs": 2}, "top_logprobs"),  # without logprobs: true, as OpenAI
        ({"temprature": 0.5}, "temprature"),
        ({"temperature": 3}, "temperature"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "user", "content": "x", "colour": 1}]}, "messages.0.colour"),
        ({"response_format": {"type": "yaml"}}, "response_format"),
    ],
)
def test_bad_fields_are_400_in_openais_shape(
    client: TestClient, engine: FakeEngine, fields: dict[str, Any], param: str
) -> None:
    response = post_chat(client, **fields)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] is not None and error["param"].startswith(param)
    assert engine.requests == []  # refused before the engine


def test_unknown_model_is_404_streamed_or_not(client_for: Callable[..., TestClient]) -> None:
    engine = FakeEngine(
        responses=["x"], cycle=True, models={"known": ModelInfo("known", "chat", ("completion",))}
    )
    client = client_for(engine)
    for stream in (False, True):
        response = client.post(
            "/v1/chat/completions", json={"model": "nope", "messages": USER, "stream": stream}
        )
        assert response.status_code == 404, stream
        error = response.json()["error"]
        assert error["code"] == "model_not_found" and error["type"] == "invalid_request_error"
    assert post_chat(client, model="known").status_code == 200
    assert client.app.state.server.in_flight == 0  # type: ignore[attr-defined]


def test_completions_are_raw_continuations(client: TestClient, engine: FakeEngine) -> None:
    response = client.post(
        "/v1/completions", json={"model": "m", "prompt": "def f():", "max_tokens": 5, "stop": "\n"}
    )
    assert response.status_code == 200, response.text
    request = engine.last_request
    assert (request.prompt, request.raw, request.method) == ("def f():", True, "agenerate")
    assert request.options == {"num_predict": 5, "stop": ["\n"]}
    body = response.json()
    assert body["object"] == "text_completion" and body["choices"][0]["text"] == "Hello!"
    assert (
        client.post("/v1/completions", json={"model": "m", "prompt": "x", "echo": True}).json()[
            "error"
        ]["param"]
        == "echo"
    )


def test_embeddings_usage_counts_the_inputs_tokens(client: TestClient, engine: FakeEngine) -> None:
    response = client.post("/v1/embeddings", json={"model": "m", "input": ["a b", "c"]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    assert [d["embedding"] for d in body["data"]] == engine.embed("m", ["a b", "c"])
    bad = client.post("/v1/embeddings", json={"model": "m", "input": [[1, 2]]})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "input"


@pytest.fixture
def stored(tiny_gguf: Path) -> list[str]:
    library = ModelLibrary()
    library.create("tiny:1b", str(tiny_gguf))
    library.create("team/coder:q4", str(tiny_gguf))
    return ["team/coder:q4", "tiny:1b"]


def test_models_list_and_retrieve_ids_with_slash_and_colon(
    stored: list[str], client: TestClient
) -> None:
    body = client.get("/v1/models").json()
    assert body["object"] == "list"
    assert sorted(m["id"] for m in body["data"]) == stored
    assert all(m["object"] == "model" and isinstance(m["created"], int) for m in body["data"])
    assert client.get("/v1/models/team/coder:q4").json()["id"] == "team/coder:q4"
    missing = client.get("/v1/models/team/nope:7b")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "model_not_found"


def test_queue_full_is_503(client_for: Callable[..., TestClient]) -> None:
    client = client_for(FakeEngine(responses=["x"], cycle=True), max_queue=0)
    state = client.app.state.server  # type: ignore[attr-defined]
    held = [state.admit() for _ in range(state.capacity)]
    try:
        response = post_chat(client)
        assert response.status_code == 503
        assert response.json()["error"]["type"] == "server_error"
    finally:
        for ticket in held:
            ticket.release()
    assert post_chat(client).status_code == 200


# ---- the official SDK and raw SSE against a real server ------------------------------


class Weather(BaseModel):
    city: str
    degrees: int


@pytest.fixture
def scripted() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def server(scripted: FakeEngine) -> Iterator[ServerThread]:
    with ServerThread(make_app(scripted)) as running:
        yield running


@pytest.fixture
def sdk(server: ServerThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)


def test_sdk_chat_stream_with_usage(sdk: openai.OpenAI, scripted: FakeEngine) -> None:
    scripted.add_responses(FakeResponse(text="Hello, world", reasoning="greet"))
    stream = sdk.chat.completions.create(
        model="m",
        messages=USER,
        stream=True,
        stream_options={"include_usage": True},  # type: ignore[arg-type]
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello, world"
    reasoning = "".join(
        (c.choices[0].delta.model_extra or {}).get("reasoning_content") or ""
        for c in chunks
        if c.choices
    )
    assert reasoning == "greet"
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 4  # "greet" + "Hello" "," " world"


def test_sdk_tools_with_tool_choice(sdk: openai.OpenAI, scripted: FakeEngine) -> None:
    scripted.add_responses(FakeEngine.tool_call("get_weather", {"city": "Paris"}))
    response = sdk.chat.completions.create(
        model="m",
        messages=USER,  # type: ignore[arg-type]
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice="required",
    )
    assert scripted.last_request.tool_choice == "required"
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == {"city": "Paris"}  # type: ignore[union-attr]
    # the answer goes back with the call (string arguments) and the tool result
    scripted.add_responses("It is sunny.")
    follow = sdk.chat.completions.create(
        model="m",
        messages=[  # type: ignore[list-item]
            *USER,
            choice.message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
        ],
        tools=[WEATHER],  # type: ignore[list-item]
    )
    assert follow.choices[0].message.content == "It is sunny."
    sent = scripted.last_request.messages or []
    assert sent[1]["tool_calls"][0]["function"]["arguments"] == call.function.arguments  # type: ignore[union-attr]
    assert sent[2] == {"role": "tool", "content": "sunny", "tool_call_id": call.id}


def test_sdk_parse_with_a_pydantic_model(sdk: openai.OpenAI, scripted: FakeEngine) -> None:
    scripted.add_responses('{"city": "Paris", "degrees": 21}')
    completion = sdk.chat.completions.parse(model="m", messages=USER, response_format=Weather)  # type: ignore[arg-type]
    assert completion.choices[0].message.parsed == Weather(city="Paris", degrees=21)
    schema = scripted.last_request.format
    assert isinstance(schema, dict) and set(schema["properties"]) == {"city", "degrees"}


def test_sdk_completions_embeddings_and_models(
    sdk: openai.OpenAI, scripted: FakeEngine, tiny_gguf: Path, server: ServerThread
) -> None:
    scripted.add_responses("    return 1")
    completion = sdk.completions.create(model="m", prompt="def f():", max_tokens=8)
    assert completion.choices[0].text == "    return 1"
    scripted.add_responses(" 2 3")
    streamed = sdk.completions.create(model="m", prompt="1", stream=True)
    assert "".join(c.choices[0].text for c in streamed if c.choices) == " 2 3"

    expected = scripted.embed("m", ["red apple", "green"])
    default = sdk.embeddings.create(model="m", input=["red apple", "green"])  # base64 on the wire
    assert [d.embedding for d in default.data] == [pytest.approx(v, abs=1e-6) for v in expected]
    floats = sdk.embeddings.create(model="m", input="red apple", encoding_format="float")
    assert floats.data[0].embedding == pytest.approx(expected[0])
    short = sdk.embeddings.create(model="m", input="red apple", dimensions=8)
    assert len(short.data[0].embedding) == 8

    server.app.state.server.library.create("tiny:1b", str(tiny_gguf))
    assert [m.id for m in sdk.models.list()] == ["tiny:1b"]
    assert sdk.models.retrieve("tiny:1b").id == "tiny:1b"
    with pytest.raises(openai.NotFoundError):
        sdk.models.retrieve("nope:1b")


def test_sdk_errors_are_typed(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        sdk.chat.completions.create(model="m", messages=USER, n=2)  # type: ignore[arg-type]
    assert info.value.param == "n"  # type: ignore[attr-defined]


def test_async_sdk_stream(server: ServerThread, scripted: FakeEngine) -> None:
    scripted.add_responses("one two")

    async def run() -> str:
        client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="x")
        stream = await client.chat.completions.create(model="m", messages=USER, stream=True)  # type: ignore[arg-type]
        parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
        await client.close()
        return "".join(parts)

    assert asyncio.run(run()) == "one two"


def test_raw_sse_framing(server: ServerThread, scripted: FakeEngine) -> None:
    scripted.add_responses("Hi there")
    with httpx.stream(
        "POST",
        server.url + "/v1/chat/completions",
        json={"model": "m", "messages": USER, "stream": True},
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = response.read().decode()
    events = raw.split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    payloads = [json.loads(e.removeprefix("data: ")) for e in events[:-2]]
    assert all(e.startswith("data: {") for e in events[:-2])
    assert "".join(p["choices"][0]["delta"].get("content", "") for p in payloads) == "Hi there"
    assert payloads[-1]["choices"][0]["finish_reason"] == "stop"


def test_engine_failure_is_a_500_without_internals(
    server: ServerThread, scripted: FakeEngine
) -> None:
    for stream in (False, True):
        scripted.add_responses(RuntimeError("secret internals"))
        response = httpx.post(
            server.url + "/v1/chat/completions",
            json={"model": "m", "messages": USER, "stream": stream},
        )
        assert response.status_code == 500, stream
        error = response.json()["error"]
        assert error["type"] == "server_error" and error["message"] == "internal server error"
        assert "secret" not in response.text and "Traceback" not in response.text
    assert server.app.state.server.in_flight == 0


def test_base64_wire_is_little_endian_float32(server: ServerThread, scripted: FakeEngine) -> None:
    body = httpx.post(
        server.url + "/v1/embeddings",
        json={"model": "m", "input": "x", "encoding_format": "base64"},
    ).json()
    raw = base64.b64decode(body["data"][0]["embedding"])
    vector = struct.unpack(f"<{len(raw) // 4}f", raw)
    assert list(vector) == pytest.approx(scripted.embed("m", ["x"])[0], abs=1e-6)


def test_a_client_leaving_mid_stream_cancels_and_frees_its_slot() -> None:
    slow = FakeEngine(responses=[" ".join(["word"] * 200)], chunk_delay=0.05)
    with ServerThread(make_app(slow)) as running:
        state = running.app.state.server
        with httpx.stream(
            "POST",
            running.url + "/v1/chat/completions",
            json={"model": "m", "messages": USER, "stream": True},
        ) as response:
            lines = response.iter_lines()
            assert next(lines).startswith("data: {")
            assert state.in_flight == 1
        deadline = time.monotonic() + 10
        while (state.in_flight or slow.open_streams) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert state.in_flight == 0 and slow.open_streams == 0


def test_raw_sse_framing_of_completions_with_usage(
    server: ServerThread, scripted: FakeEngine
) -> None:
    scripted.add_responses("a b")
    with httpx.stream(
        "POST",
        server.url + "/v1/completions",
        json={
            "model": "m",
            "prompt": "x",
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    ) as response:
        raw = response.read().decode()
    events = raw.split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    payloads = [json.loads(e.removeprefix("data: ")) for e in events[:-2]]
    assert {p["object"] for p in payloads} == {"text_completion"}
    assert "".join(p["choices"][0]["text"] for p in payloads if p["choices"]) == "a b"
    assert payloads[-1]["choices"] == [] and payloads[-1]["usage"]["completion_tokens"] == 2
    assert all(p["usage"] is None for p in payloads[:-1])
