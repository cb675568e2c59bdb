"""Ollama's REST API over a FakeEngine: HTTP shapes, errors, store endpoints, the official SDK."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import ollama
import pytest
from pydantic import BaseModel
from starlette.testclient import TestClient

from local_llm_runtime.store.library import ModelLibrary
from local_llm_runtime.testing import FakeEngine, FakeResponse
from local_llm_runtime.types import ModelInfo, Usage
from tests.support.fake_hub import FakeHub
from tests.support.server import ServerThread, make_app

REPO = "Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF"
Q4 = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather of a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def _lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line]


# ---- chat / generate over HTTP -----------------------------------------------------------------


def test_chat_streams_ndjson_and_ends_with_metrics(client_for: Callable[..., TestClient]) -> None:
    engine = FakeEngine(responses=["Hello, world"])
    client = client_for(engine)
    response = client.post(
        "/api/chat", json={"model": "m:1", "messages": [{"role": "user", "content": "Hi"}]}
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/x-ndjson")
    objs = _lines(response.text)
    assert "".join(o["message"]["content"] for o in objs) == "Hello, world"
    assert [o["done"] for o in objs] == [False] * (len(objs) - 1) + [True]
    final = objs[-1]
    assert final["done_reason"] == "stop" and final["eval_count"] == 3
    assert final["prompt_eval_count"] == engine.count_chat_tokens(
        "m:1", [{"role": "user", "content": "Hi"}]
    )
    for key in ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration"):
        assert isinstance(final[key], int)
    assert engine.last_request.method == "achat_stream"


def test_chat_stream_false_is_one_object(client: TestClient) -> None:
    response = client.post(
        "/api/chat",
        json={"model": "m", "stream": False, "messages": [{"role": "user", "content": "Hi"}]},
    )
    body = response.json()
    assert body["message"] == {"role": "assistant", "content": "Hello!"} and body["done"] is True


def test_chat_passes_options_format_tools_think_keep_alive(
    client_for: Callable[..., TestClient],
) -> None:
    thinker = ModelInfo(name="r:1", kind="chat", capabilities=("completion", "tools", "thinking"))
    engine = FakeEngine(
        responses=[FakeResponse(text='{"a": 1}', reasoning="think")], models={"r:1": thinker}
    )
    client = client_for(engine)
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    body = client.post(
        "/api/chat",
        json={
            "model": "r:1",
            "stream": False,
            "messages": [{"role": "user", "content": "x"}],
            "options": {"temperature": 0, "num_predict": 20, "use_mmap": True},
            "format": schema,
            "tools": [WEATHER_TOOL],
            "think": True,
            "keep_alive": "10m",
        },
    ).json()
    assert body["message"]["thinking"] == "think" and body["message"]["content"] == '{"a": 1}'
    request = engine.last_request
    assert request.options == {"temperature": 0.0, "num_predict": 20}
    assert request.format == schema and request.tools == [WEATHER_TOOL]
    assert request.reasoning == "separate" and request.keep_alive == 600.0


def test_think_false_hides_reasoning_and_think_needs_a_thinking_model(
    client_for: Callable[..., TestClient],
) -> None:
    engine = FakeEngine(responses=[FakeResponse(text="4", reasoning="2+2")])
    client = client_for(engine)
    msgs = [{"role": "user", "content": "x"}]
    body = client.post(
        "/api/chat", json={"model": "m", "stream": False, "messages": msgs, "think": False}
    ).json()
    assert body["message"] == {"role": "assistant", "content": "4"}
    refused = client.post("/api/chat", json={"model": "m", "messages": msgs, "think": True})
    assert refused.status_code == 400 and "does not support thinking" in refused.json()["error"]


def test_tool_call_round_trip(client_for: Callable[..., TestClient]) -> None:
    engine = FakeEngine(
        responses=[FakeEngine.tool_call("get_weather", {"city": "Paris"}), "Sunny in Paris."]
    )
    client = client_for(engine)
    msgs: list[dict[str, Any]] = [{"role": "user", "content": "Weather in Paris?"}]
    objs = _lines(
        client.post(
            "/api/chat", json={"model": "m", "messages": msgs, "tools": [WEATHER_TOOL]}
        ).text
    )
    calls = [c for o in objs for c in o["message"].get("tool_calls", [])]
    assert [c["function"] for c in calls] == [
        {"index": 0, "name": "get_weather", "arguments": {"city": "Paris"}}
    ]
    assert objs[-1]["done_reason"] == "stop"
    msgs += [
        {"role": "assistant", "content": "", "tool_calls": [{"function": calls[0]["function"]}]},
        {"role": "tool", "content": "sunny", "tool_name": "get_weather"},
    ]
    body = client.post(
        "/api/chat",
        json={"model": "m", "messages": msgs, "tools": [WEATHER_TOOL], "stream": False},
    ).json()
    assert body["message"]["content"] == "Sunny in Paris."
    sent = engine.last_request.messages
    assert sent is not None
    call_id = sent[1]["tool_calls"][0]["id"]
    assert sent[2] == {
        "role": "tool",
        "content": "sunny",
        "name": "get_weather",
        "tool_call_id": call_id,
    }


def test_generate_stream_and_whole(client_for: Callable[..., TestClient]) -> None:
    engine = FakeEngine(responses=["Once upon", "a time"])
    client = client_for(engine)
    objs = _lines(client.post("/api/generate", json={"model": "m", "prompt": "Tell"}).text)
    assert "".join(o["response"] for o in objs) == "Once upon" and objs[-1]["done"] is True
    body = client.post(
        "/api/generate",
        json={"model": "m", "prompt": "Go", "system": "S", "raw": False, "stream": False,
              "format": "json", "options": {"seed": 3}},
    ).json()  # fmt: skip
    assert body["response"] == "a time" and body["done_reason"] == "stop"
    request = engine.last_request
    assert (request.prompt, request.system, request.format, request.options) == (
        "Go", "S", "json", {"seed": 3},
    )  # fmt: skip


def test_num_predict_cut_is_done_reason_length(client_for: Callable[..., TestClient]) -> None:
    client = client_for(FakeEngine(responses=["one two three four"]))
    body = client.post(
        "/api/generate",
        json={"model": "m", "prompt": "x", "stream": False, "options": {"num_predict": 2}},
    ).json()
    assert body["done_reason"] == "length" and body["eval_count"] == 2


def test_empty_request_loads_and_keep_alive_zero_unloads(
    client: TestClient, engine: FakeEngine
) -> None:
    loaded = client.post("/api/generate", json={"model": "m:1"}).json()
    assert loaded["done"] is True and loaded["done_reason"] == "load"
    assert [m.name for m in engine.ps()] == ["m:1"]
    assert client.get("/api/ps").json()["models"][0]["name"] == "m:1"
    unloaded = client.post("/api/chat", json={"model": "m:1", "messages": [], "keep_alive": 0})
    assert (
        unloaded.json()["done_reason"] == "unload" and unloaded.json()["message"]["content"] == ""
    )
    assert engine.ps() == [] and engine.requests == []  # no generation ran


# ---- errors ------------------------------------------------------------------------------------


def test_unknown_model_is_404(client_for: Callable[..., TestClient]) -> None:
    info = ModelInfo(name="known:1", kind="chat", capabilities=("completion",))
    client = client_for(FakeEngine(responses=["x"], cycle=True, models={"known:1": info}))
    for path, body in [
        ("/api/chat", {"model": "nope:1", "messages": [{"role": "user", "content": "x"}]}),
        ("/api/chat", {"model": "nope:1", "stream": False, "messages": [{"role": "user", "content": "x"}]}),
        ("/api/generate", {"model": "nope:1", "prompt": "x"}),
        ("/api/generate", {"model": "nope:1"}),
        ("/api/embed", {"model": "nope:1", "input": "x"}),
        ("/api/show", {"model": "nope:1"}),
    ]:  # fmt: skip
        response = client.post(path, json=body)
        assert response.status_code == 404, (path, body, response.text)
        assert "nope:1" in response.json()["error"]
    assert client.post("/api/chat", json={"model": "known:1", "messages": [
        {"role": "user", "content": "x"}]}).status_code == 200  # fmt: skip


@pytest.mark.parametrize(
    ("path", "content", "fragment"),
    [
        ("/api/chat", b"{not json", "invalid JSON"),
        ("/api/chat", b"\xff\xfe{}", "UTF-8"),
        ("/api/chat", b"[1, 2]", "JSON object"),
        ("/api/chat", b"", "missing request body"),
        ("/api/chat", b'{"model": "m", "messages": [], "extra": 1}', "extra: unknown field"),
        ("/api/chat", b'{"model": 5, "messages": []}', "model"),
        ("/api/chat", b'{"model": "m", "stream": "no"}', "stream"),
        (
            "/api/chat",
            b'{"model": "m", "messages": [{"role": "user", "content": "x", "images": ["aGk="]}]}',
            "vision",
        ),
        (
            "/api/chat",
            b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "options": {"temprature": 1}}',
            "temperature",
        ),
        (
            "/api/chat",
            b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "keep_alive": "later"}',
            "keep_alive",
        ),
        ("/api/chat", b'{"model": "../../etc/passwd", "messages": []}', "model"),
        (
            "/api/chat",
            b'{"model": "../x.gguf", "messages": [{"role": "user", "content": "x"}]}',
            "path",
        ),
        ("/api/generate", b'{"model": "m", "prompt": "x", "suffix": "y"}', "suffix"),
        ("/api/generate", b'{"model": "/tmp/a.gguf", "prompt": "x"}', "path"),
        ("/api/embed", b'{"model": "m", "input": [1, 2]}', "input"),
        ("/api/embed", b'{"model": "m", "input": "x", "dimensions": 0}', "dimensions"),
        ("/api/show", b'{"model": "a/../b"}', "model"),
        ("/api/copy", b'{"source": "m", "destination": "../evil"}', "destination"),
        ("/api/pull", b'{"model": "../evil"}', "model"),
        ("/api/create", b'{"model": "x:1"}', "from"),
    ],
)
def test_bad_requests_are_400_json_and_the_server_keeps_serving(
    client: TestClient, path: str, content: bytes, fragment: str
) -> None:
    response = client.post(path, content=content, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert isinstance(error, str) and fragment in error
    assert "Traceback" not in response.text
    ok = client.post("/api/generate", json={"model": "m", "prompt": "x", "stream": False})
    assert ok.status_code == 200


def test_chunked_body_over_the_limit_is_413(client_for: Callable[..., TestClient]) -> None:
    client = client_for(max_body_bytes=1024)

    def body() -> Iterator[bytes]:
        yield b'{"model": "m", "prompt": "'
        for _ in range(10):
            yield b"x" * 512
        yield b'"}'

    response = client.post("/api/generate", content=body())  # no Content-Length: chunked
    assert response.status_code == 413 and "LOCAL_LLM_MAX_BODY" in response.json()["error"]
    assert client.post("/api/generate", json={"model": "m", "prompt": "x"}).status_code == 200


def test_queue_full_is_503(client_for: Callable[..., TestClient]) -> None:
    client = client_for(max_queue=0)
    state = client.app.state.server  # type: ignore[attr-defined]
    held = [state.admit() for _ in range(state.capacity)]
    try:
        response = client.post("/api/generate", json={"model": "m", "prompt": "x"})
        assert response.status_code == 503 and "busy" in response.json()["error"]
    finally:
        for ticket in held:
            ticket.release()
    assert client.post("/api/generate", json={"model": "m", "prompt": "x"}).status_code == 200
    assert state.in_flight == 0


def test_an_engine_error_after_the_first_object_is_an_error_line(
    client_for: Callable[..., TestClient],
) -> None:
    from local_llm_runtime.types import TextDelta

    class Boom(FakeEngine):
        def achat_stream(self, *args: Any, **kwargs: Any) -> Any:
            inner = super().achat_stream(*args, **kwargs)

            async def gen() -> Any:
                yield TextDelta("partial")
                raise RuntimeError("secret internals")
                yield inner  # pragma: no cover

            return gen()

    client = client_for(Boom(responses=["x"]))
    objs = _lines(
        client.post(
            "/api/chat", json={"model": "m", "messages": [{"role": "user", "content": "x"}]}
        ).text
    )
    assert objs[0]["message"]["content"] == "partial"
    assert objs[-1] == {"error": "internal server error"}


# ---- embeddings --------------------------------------------------------------------------------


def test_embed_and_legacy_embeddings(client: TestClient, engine: FakeEngine) -> None:
    body = client.post("/api/embed", json={"model": "m", "input": ["red apple", "blue sky"]}).json()
    assert len(body["embeddings"]) == 2 and len(body["embeddings"][0]) == engine.dimension
    assert abs(sum(x * x for x in body["embeddings"][0]) - 1.0) < 1e-6
    assert body["embeddings"] == engine.embed("m", ["red apple", "blue sky"])
    assert isinstance(body["total_duration"], int) and body["model"] == "m"
    assert body["prompt_eval_count"] == len(engine.tokenize("m", "red apple")) + len(
        engine.tokenize("m", "blue sky")
    )
    one = client.post("/api/embed", json={"model": "m", "input": "red apple", "dimensions": 4})
    vec = one.json()["embeddings"][0]
    assert len(vec) == 4 and abs(sum(x * x for x in vec) - 1.0) < 1e-6
    legacy = client.post("/api/embeddings", json={"model": "m", "prompt": "red apple"}).json()
    assert legacy["embedding"] == engine.embed("m", ["red apple"], normalize=False)[0]
    assert engine.last_request.normalize is False


def test_embed_truncate_false_refuses_a_too_long_input(
    client_for: Callable[..., TestClient],
) -> None:
    small = ModelInfo(name="e:1", kind="embedding", capabilities=("embedding",), context_length=8)
    client = client_for(FakeEngine(models={"e:1": small}))
    long = " ".join(["word"] * 20)
    refused = client.post("/api/embed", json={"model": "e:1", "input": long, "truncate": False})
    # The engine's own truncate parameter refuses it (ContextLengthExceededError -> 400).
    assert refused.status_code == 400 and "context window is 8" in refused.json()["error"]
    ok = client.post("/api/embed", json={"model": "e:1", "input": long})
    assert ok.status_code == 200


def test_embed_dimensions_and_truncate_reach_the_engine(
    client: TestClient, engine: FakeEngine
) -> None:
    body = {"model": "m", "input": ["red apple"], "dimensions": 5, "truncate": False}
    (vector,) = client.post("/api/embed", json=body).json()["embeddings"]
    assert engine.last_request.dimensions == 5 and engine.last_request.truncate is False
    full = engine.embed("m", ["red apple"])[0]
    norm = sum(x * x for x in full[:5]) ** 0.5
    assert vector == pytest.approx([x / norm for x in full[:5]])
    too_wide = {"model": "m", "input": "x", "dimensions": engine.dimension + 1}
    refused = client.post("/api/embed", json=too_wide)
    assert refused.status_code == 400 and f"at most {engine.dimension}" in refused.json()["error"]


# ---- store endpoints (tiny GGUF, fake Hub) -----------------------------------------------------


def test_create_show_tags_copy_delete(client: TestClient, tiny_gguf: Path) -> None:
    created = client.post(
        "/api/create",
        json={"model": "tiny:1", "from": str(tiny_gguf), "system": "Be brief.",
              "parameters": {"temperature": 0.3, "stop": ["User:"]}},
    )  # fmt: skip
    statuses = [o["status"] for o in _lines(created.text)]
    assert statuses[0] == "parsing modelfile" and statuses[-1] == "success"
    assert any(s.startswith("using existing layer sha256:") for s in statuses)

    tags = client.get("/api/tags").json()["models"]
    assert [m["name"] for m in tags] == ["tiny:1"]
    assert tags[0]["size"] == tiny_gguf.stat().st_size and len(tags[0]["digest"]) == 64

    shown = client.post("/api/show", json={"model": "tiny:1"}).json()
    assert shown["system"] == "Be brief."
    assert shown["parameters"].splitlines() == [
        f"{'temperature':<30} 0.3",
        f'{"stop":<30} "User:"',
    ]
    assert shown["details"]["format"] == "gguf" and shown["details"]["family"] == "llama"
    assert shown["model_info"]["general.architecture"] == "llama"
    assert "llama.context_length" in shown["model_info"]
    assert "completion" in shown["capabilities"]
    assert shown["template"]  # the tiny GGUF has a chat template
    assert 'SYSTEM """Be brief."""' in shown["modelfile"]

    assert (
        client.post("/api/copy", json={"source": "tiny:1", "destination": "tiny:2"}).status_code
        == 200
    )
    again = client.post("/api/copy", json={"source": "tiny:1", "destination": "tiny:2"})
    assert again.status_code == 409
    assert client.request("DELETE", "/api/delete", json={"model": "tiny:1"}).status_code == 200
    missing = client.request("DELETE", "/api/delete", json={"model": "tiny:1"})
    assert missing.status_code == 404 and "tiny:1" in missing.json()["error"]
    assert [m["name"] for m in client.get("/api/tags").json()["models"]] == ["tiny:2"]
    whole = client.post("/api/create", json={"model": "tiny:3", "from": "tiny:2", "stream": False})
    assert whole.json() == {"status": "success"}


def test_create_refuses_unsupported_fields(client: TestClient, tiny_gguf: Path) -> None:
    response = client.post(
        "/api/create", json={"model": "t:1", "from": str(tiny_gguf), "quantize": "q8_0"}
    )
    assert response.status_code == 400 and "quantize" in response.json()["error"]


def test_pull_streams_progress(
    fake_hub: FakeHub, tiny_gguf_factory: Callable[..., Path], client_for: Callable[..., TestClient]
) -> None:
    blob = tiny_gguf_factory(seed=1)
    fake_hub.add_repo(REPO, {Q4: blob})
    client = client_for()
    objs = _lines(client.post("/api/pull", json={"model": "qwen2.5-coder:0.5b"}).text)
    statuses = [o["status"] for o in objs]
    assert statuses[0] == "pulling manifest" and statuses[-1] == "success"
    assert "verifying sha256 digest" in statuses and "writing manifest" in statuses
    pulling = [o for o in objs if o["status"].startswith("pulling ") and "total" in o]
    size = blob.stat().st_size
    assert pulling and all(o["total"] == size for o in pulling)
    assert pulling[-1]["completed"] == size and pulling[0]["digest"].startswith("sha256:")
    done = [o["completed"] for o in pulling]
    assert done == sorted(done)
    assert fake_hub.file_gets(Q4) == 1
    # stream false: one object; a second pull needs no download
    assert client.post(
        "/api/pull", json={"model": "qwen2.5-coder:0.5b", "stream": False}
    ).json() == {"status": "success"}
    assert fake_hub.file_gets(Q4) == 1
    missing = _lines(client.post("/api/pull", json={"model": "nosuchmodel:1b"}).text)
    assert missing[0] == {"status": "pulling manifest"} and "error" in missing[-1]
    whole = client.post("/api/pull", json={"model": "nosuchmodel:1b", "stream": False})
    assert whole.status_code == 404


# ---- the official ollama SDK -------------------------------------------------------------------


def _add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: The first.
        b: The second.
    """
    return a + b


class Pet(BaseModel):
    name: str
    age: int


def test_official_sdk_generation(tmp_path: Path) -> None:
    engine = FakeEngine(
        responses=[
            "Hello there!",
            "Streamed answer",
            FakeEngine.tool_call("_add", {"a": 2, "b": 3}),
            '{"name": "Rex", "age": 3}',
            "Once",
            FakeResponse(text="Async!", usage=Usage(4, 2)),
            "Async stream",
        ]
    )
    with ServerThread(make_app(engine)) as server:
        client = ollama.Client(host=server.url)
        msgs = [{"role": "user", "content": "hi"}]
        reply = client.chat(model="m:1", messages=msgs)
        assert reply.message.content == "Hello there!" and reply.done_reason == "stop"
        assert reply.eval_count == 3 and reply.created_at
        parts = list(client.chat(model="m:1", messages=msgs, stream=True))
        assert "".join(p.message.content or "" for p in parts) == "Streamed answer"
        assert parts[-1].done is True

        call = client.chat(model="m:1", messages=msgs, tools=[_add]).message.tool_calls
        assert call is not None and call[0].function.name == "_add"
        assert dict(call[0].function.arguments) == {"a": 2, "b": 3}
        offered = engine.last_request.tools
        assert offered is not None and offered[0]["function"]["name"] == "_add"

        pet = client.chat(model="m:1", messages=msgs, format=Pet.model_json_schema())
        assert Pet.model_validate_json(pet.message.content or "") == Pet(name="Rex", age=3)
        assert engine.last_request.format == Pet.model_json_schema()

        assert client.generate(model="m:1", prompt="x").response == "Once"
        vectors = client.embed(model="m:1", input=["a", "b"]).embeddings
        assert len(vectors) == 2
        assert len(client.embeddings(model="m:1", prompt="a").embedding) == engine.dimension
        assert [m.model for m in client.ps().models] == ["m:1", "m:1"]  # chat + embedding
        shown = client.show("m:1")
        assert shown.capabilities == ["completion", "tools"] and shown.details is not None

        async def run_async() -> tuple[str, str]:
            aclient = ollama.AsyncClient(host=server.url)
            whole = await aclient.chat(model="m:1", messages=msgs)
            streamed = [
                p.message.content or ""
                async for p in await aclient.chat(model="m:1", messages=msgs, stream=True)
            ]
            return whole.message.content or "", "".join(streamed)

        assert asyncio.run(run_async()) == ("Async!", "Async stream")
        with pytest.raises(ollama.ResponseError) as info:
            client.chat(model="m:1", messages=msgs, options={"temprature": 1})
        assert info.value.status_code == 400


def test_official_sdk_store(
    fake_hub: FakeHub, tiny_gguf_factory: Callable[..., Path], tiny_gguf: Path
) -> None:
    fake_hub.add_repo(REPO, {Q4: tiny_gguf_factory(seed=1)})
    with ServerThread(make_app()) as server:
        client = ollama.Client(host=server.url)
        progress = list(client.pull("qwen2.5-coder:0.5b", stream=True))
        assert progress[0].status == "pulling manifest" and progress[-1].status == "success"
        assert any(p.total and p.completed == p.total for p in progress)
        assert client.pull("qwen2.5-coder:0.5b").status == "success"
        assert [m.model for m in client.list().models] == ["qwen2.5-coder:0.5b"]
        assert client.create(model="mine:1", from_=str(tiny_gguf), system="Hi.").status == "success"
        assert client.copy("mine:1", "mine:2").status == "success"
        assert client.show("mine:2").modelfile is not None
        assert client.delete("mine:1").status == "success"
        assert sorted(m.model or "" for m in client.list().models) == [
            "mine:2",
            "qwen2.5-coder:0.5b",
        ]
        with pytest.raises(ollama.ResponseError) as info:
            client.delete("mine:1")
        assert info.value.status_code == 404
    assert ModelLibrary().list()[0].name == "mine:2"
