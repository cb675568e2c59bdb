"""logprobs/top_logprobs over both wire APIs: the official SDKs, ChatOpenAI, the remote backend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ollama
import openai
import pytest
from langchain_openai import ChatOpenAI
from starlette.testclient import TestClient

from local_llm_integrations import ChatLocal
from local_llm_runtime.remote import RemoteEngine
from local_llm_runtime.remote.chunks import Assembler
from local_llm_runtime.remote.ollama_dialect import apply_line
from local_llm_runtime.remote.ollama_dialect import chat_body as ollama_chat_body
from local_llm_runtime.remote.openai_dialect import (
    apply_chat_event,
    apply_completion_event,
    chat_body,
    completion_body,
)
from local_llm_runtime.settings import RemoteSettings
from local_llm_runtime.store.library import ModelLibrary
from local_llm_runtime.testing import FakeEngine, FakeResponse, fake_logprobs
from local_llm_runtime.types import ReasoningDelta, TextDelta
from tests.support.server import ServerThread, make_app

ANSWER = "Hello, world"
USER = [{"role": "user", "content": "hi"}]


@pytest.fixture
def fake() -> FakeEngine:
    return FakeEngine(responses=[ANSWER], cycle=True)


@pytest.fixture
def server(fake: FakeEngine) -> Iterator[ServerThread]:
    with ServerThread(make_app(fake)) as running:
        yield running


# ---- OpenAI ------------------------------------------------------------------------------------


def test_openai_sdk_chat_logprobs(server: ServerThread, fake: FakeEngine) -> None:
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
    items = fake_logprobs(ANSWER, 2)
    reply = client.chat.completions.create(
        model="m",
        messages=USER,
        logprobs=True,
        top_logprobs=2,  # type: ignore[arg-type]
    )
    assert fake.last_request.options == {"logprobs": True, "top_logprobs": 2}
    content = reply.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content is not None and [t.token for t in content] == ["Hello", ",", " world"]
    assert [t.logprob for t in content] == [t.logprob for t in items]
    assert content[0].bytes == list(b"Hello")
    assert [a.token for a in content[0].top_logprobs] == ["Hello", "<alt1>"]

    stream = client.chat.completions.create(
        model="m",
        messages=USER,
        logprobs=True,
        stream=True,  # type: ignore[arg-type]
    )
    streamed = [
        t.token
        for chunk in stream
        for choice in chunk.choices
        if choice.logprobs is not None
        for t in choice.logprobs.content or ()
    ]
    assert streamed == ["Hello", ",", " world"]
    plain = client.chat.completions.create(model="m", messages=USER)  # type: ignore[arg-type]
    assert plain.choices[0].logprobs is None


def test_openai_sdk_legacy_completion_logprobs(server: ServerThread, fake: FakeEngine) -> None:
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
    items = fake_logprobs(ANSWER, 2)
    reply = client.completions.create(model="m", prompt="x", logprobs=2)
    assert fake.last_request.options == {"logprobs": True, "top_logprobs": 2}
    logprobs = reply.choices[0].logprobs
    assert logprobs is not None
    assert logprobs.tokens == ["Hello", ",", " world"]
    assert logprobs.token_logprobs == [t.logprob for t in items]
    assert logprobs.text_offset == [0, 5, 6]
    assert logprobs.top_logprobs is not None
    assert logprobs.top_logprobs[2] == {
        " world": items[2].logprob,
        "<alt1>": items[2].top_logprobs[1].logprob,
    }
    chunks = list(client.completions.create(model="m", prompt="x", logprobs=0, stream=True))
    offsets = [
        o for c in chunks if c.choices[0].logprobs for o in c.choices[0].logprobs.text_offset or ()
    ]
    assert offsets == [0, 5, 6]  # counted from the start of the completion, across chunks


def test_chat_openai_and_chat_local_give_the_same_metadata(
    server: ServerThread, fake: FakeEngine
) -> None:
    remote = ChatOpenAI(
        base_url=server.url + "/v1", api_key="x", model="m", max_retries=0,  # type: ignore[arg-type]
        logprobs=True, top_logprobs=2,
    )  # fmt: skip
    local = ChatLocal(model="m", engine=fake, logprobs=True, top_logprobs=2)
    theirs = remote.invoke("hi").response_metadata["logprobs"]
    ours = local.invoke("hi").response_metadata["logprobs"]
    assert theirs == ours and len(ours["content"]) == 3


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ],
)
def test_openai_refuses_bad_logprob_fields(
    fake: FakeEngine, fields: dict[str, Any], param: str
) -> None:
    with TestClient(make_app(fake)) as client:
        body = {"model": "m", "messages": USER, **fields}
        response = client.post("/v1/chat/completions", json=body)
        assert response.status_code == 400 and response.json()["error"]["param"] == param
        body = {"model": "m", "prompt": "x", "logprobs": 21}
        legacy = client.post("/v1/completions", json=body)
        assert legacy.status_code == 400 and legacy.json()["error"]["param"] == "logprobs"
    assert fake.requests == []


# ---- Ollama ------------------------------------------------------------------------------------


def test_ollama_sdk_chat_and_generate_logprobs(server: ServerThread, fake: FakeEngine) -> None:
    client = ollama.Client(host=server.url)
    items = fake_logprobs(ANSWER, 2)
    reply = client.chat(model="m:1", messages=USER, logprobs=True, top_logprobs=2)
    assert fake.last_request.options == {"logprobs": True, "top_logprobs": 2}
    assert reply.logprobs is not None
    assert [t.token for t in reply.logprobs] == ["Hello", ",", " world"]
    assert [t.logprob for t in reply.logprobs] == [t.logprob for t in items]
    assert [a.token for a in reply.logprobs[0].top_logprobs or ()] == ["Hello", "<alt1>"]
    parts = list(client.chat(model="m:1", messages=USER, logprobs=True, stream=True))
    assert [t.token for p in parts for t in p.logprobs or ()] == ["Hello", ",", " world"]
    generated = client.generate(model="m:1", prompt="hi", logprobs=True, top_logprobs=1)
    assert [t.token for t in generated.logprobs or ()] == ["Hello", ",", " world"]
    raw = client.chat(model="m:1", messages=USER, logprobs=True).model_dump()
    assert raw["logprobs"][0]["top_logprobs"] is None  # omitted without alternatives
    assert client.chat(model="m:1", messages=USER).logprobs is None


def test_ollama_thinking_tokens_come_with_thinking() -> None:
    engine = FakeEngine(responses=[FakeResponse(text="ok", reasoning="hmm")], cycle=True)
    with ServerThread(make_app(engine)) as running:
        client = ollama.Client(host=running.url)
        reply = client.chat(model="m:1", messages=USER, logprobs=True)
        assert [t.token for t in reply.logprobs or ()] == ["hmm", "ok"]
        parts = list(client.chat(model="m:1", messages=USER, logprobs=True, stream=True))
        thinking = [p for p in parts if p.message.thinking]
        assert [t.token for t in thinking[0].logprobs or ()] == ["hmm"]


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ],
)
def test_ollama_refuses_bad_logprob_fields(
    fake: FakeEngine, fields: dict[str, Any], param: str
) -> None:
    with TestClient(make_app(fake)) as client:
        for path, body in (("/api/chat", {"messages": USER}), ("/api/generate", {"prompt": "x"})):
            response = client.post(path, json={"model": "m:1", "stream": False, **body, **fields})
            assert response.status_code == 400, response.text
            assert param in response.json()["error"]
    assert fake.requests == []


# ---- the remote backend ----------------------------------------------------------------------


def test_remote_request_bodies_ask_for_logprobs() -> None:
    options = {"logprobs": True, "top_logprobs": 3, "temperature": 0.0}
    body = chat_body("m", USER, options=options)
    assert (body["logprobs"], body["top_logprobs"]) == (True, 3)
    assert completion_body("m", "x", options=options)["logprobs"] == 3
    ollama_body = ollama_chat_body("m", USER, options=options)
    assert (ollama_body["logprobs"], ollama_body["top_logprobs"]) == (True, 3)
    assert ollama_body["options"] == {"temperature": 0.0}
    assert "logprobs" not in chat_body("m", USER, options={"temperature": 0.0})


def test_remote_parsers_attach_the_servers_logprobs() -> None:
    item = {"token": "Hi", "logprob": -0.25, "bytes": [72, 105], "top_logprobs": []}
    event = {"choices": [{"delta": {"content": "Hi"}, "logprobs": {"content": [item]}}]}
    (chunk,) = apply_chat_event(Assembler(model="m"), event)
    assert isinstance(chunk, TextDelta) and chunk.logprobs[0].logprob == -0.25
    legacy = {
        "choices": [
            {
                "text": "Hi",
                "logprobs": {
                    "tokens": ["Hi"],
                    "token_logprobs": [-0.25],
                    "top_logprobs": [{"Ho": -2.0, "Hi": -0.25}],
                    "text_offset": [0],
                },
            }
        ]
    }
    (chunk,) = apply_completion_event(Assembler(model="m"), legacy)
    assert isinstance(chunk, TextDelta)
    assert [t.token for t in chunk.logprobs[0].top_logprobs] == ["Hi", "Ho"]  # sorted
    line = {"message": {"thinking": "so"}, "logprobs": [{"token": "so", "logprob": -1.0}]}
    (chunk,) = apply_line(Assembler(model="m"), line)
    assert isinstance(chunk, ReasoningDelta) and chunk.logprobs[0].bytes == tuple(b"so")


@pytest.mark.parametrize("dialect", ["openai", "ollama"])
def test_remote_engine_round_trip(
    server: ServerThread, fake: FakeEngine, tiny_gguf: Path, dialect: str
) -> None:
    ModelLibrary().create("tiny:1b", str(tiny_gguf))
    url = server.url + "/v1" if dialect == "openai" else server.url
    engine = RemoteEngine(remote=RemoteSettings(base_url=url))
    options = {"logprobs": True, "top_logprobs": 2}
    result = engine.chat("tiny:1b", USER, options=options)
    assert fake.last_request.options == options
    assert result.logprobs == list(fake_logprobs(ANSWER, 2))
    raw = engine.generate("tiny:1b", "x", raw=True, options=options)
    assert [(t.token, t.logprob) for t in raw.logprobs] == [
        (t.token, t.logprob) for t in fake_logprobs(ANSWER, 2)
    ]
    assert engine.chat("tiny:1b", USER).logprobs == []
