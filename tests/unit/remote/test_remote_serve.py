"""RemoteEngine end to end against `local-llm serve` over a FakeEngine, in both dialects."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from local_llm_runtime.errors import (
    AuthenticationError,
    ModelNotFoundError,
    ToolCallMissingError,
    UnknownOptionError,
)
from local_llm_runtime.remote import RemoteEngine
from local_llm_runtime.settings import RemoteSettings
from local_llm_runtime.store.library import ModelLibrary
from local_llm_runtime.streams import NativeAsyncChunkStream
from local_llm_runtime.testing import FakeEngine, FakeResponse
from local_llm_runtime.types import FinalChunk, TextDelta
from tests.support.server import ServerThread, make_app

USER = [{"role": "user", "content": "Hi"}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "Weather of a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


@pytest.fixture
def fake() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def server(fake: FakeEngine, tiny_gguf: Path) -> Iterator[ServerThread]:
    ModelLibrary().create("tiny:1b", str(tiny_gguf))
    with ServerThread(make_app(fake)) as running:
        yield running


@pytest.fixture(params=["openai", "ollama"])
def dialect(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def engine_for(server: ServerThread, dialect: str, **fields: object) -> RemoteEngine:
    # openai: the /v1 URL (detected from the URL); ollama: the root (detected by /api/version)
    url = server.url + "/v1" if dialect == "openai" else server.url
    return RemoteEngine(remote=RemoteSettings(base_url=url, **fields))  # type: ignore[arg-type]


def test_dialect_is_detected(server: ServerThread, dialect: str) -> None:
    assert engine_for(server, dialect).dialect() == dialect


def test_chat_stream_and_usage(server: ServerThread, fake: FakeEngine, dialect: str) -> None:
    fake.add_responses("Hello there", "Hello there")
    engine = engine_for(server, dialect)
    with engine.chat_stream("tiny:1b", USER) as stream:
        chunks = list(stream)
    assert "".join(c.text for c in chunks if isinstance(c, TextDelta)) == "Hello there"
    finals = [c for c in chunks if isinstance(c, FinalChunk)]
    assert len(finals) == 1 and finals[0] is chunks[-1]
    assert finals[0].finish_reason == "stop" and finals[0].model == "tiny:1b"
    assert finals[0].usage.prompt_tokens > 0 and finals[0].usage.completion_tokens > 0
    whole = engine.chat("tiny:1b", USER)
    assert whole.text == "Hello there" and whole.usage == finals[0].usage
    assert fake.last_request.model == "tiny:1b"


def test_async_chat_is_native(server: ServerThread, fake: FakeEngine, dialect: str) -> None:
    fake.add_responses("Async answer", "Async answer")
    engine = engine_for(server, dialect)

    async def main() -> tuple[str, str]:
        stream = engine.achat_stream("tiny:1b", USER)
        assert isinstance(stream, NativeAsyncChunkStream)
        async with stream:
            text = "".join([c.text async for c in stream if isinstance(c, TextDelta)])
        whole = await engine.achat("tiny:1b", USER)
        await engine.aclose()
        return text, whole.text

    assert asyncio.run(main()) == ("Async answer", "Async answer")


def test_reasoning_modes(server: ServerThread, fake: FakeEngine, dialect: str) -> None:
    answer = FakeResponse(text="42", reasoning="Let me think.")
    fake.add_responses(answer, answer, answer)
    engine = engine_for(server, dialect)
    separate = engine.chat("tiny:1b", USER)
    assert (separate.reasoning, separate.text) == ("Let me think.", "42")
    hidden = engine.chat("tiny:1b", USER, reasoning="hide")
    assert (hidden.reasoning, hidden.text) == ("", "42")
    inline = engine.chat("tiny:1b", USER, reasoning="inline")
    assert inline.text == "<think>Let me think.</think>42"


def test_tool_calls_auto(server: ServerThread, fake: FakeEngine, dialect: str) -> None:
    fake.add_responses(FakeEngine.tool_call("weather", {"city": "Paris"}))
    result = engine_for(server, dialect).chat("tiny:1b", USER, tools=[WEATHER])
    assert result.finish_reason == "tool_calls"
    assert [(c.name, c.arguments, c.error) for c in result.tool_calls] == [
        ("weather", {"city": "Paris"}, None)
    ]
    assert fake.last_request.tools and fake.last_request.tools[0]["function"]["name"] == "weather"


def test_invalid_arguments_are_flagged(server: ServerThread, fake: FakeEngine) -> None:
    # local-llm serve sends invalid calls over /v1 only (its Ollama API drops them, as Ollama)
    dialect = "openai"
    fake.add_responses(FakeEngine.tool_call("weather", {"town": "Paris"}))
    result = engine_for(server, dialect).chat("tiny:1b", USER, tools=[WEATHER])
    assert not result.tool_calls
    assert result.invalid_tool_calls and "city" in (result.invalid_tool_calls[0].error or "")


def test_forced_tool_choice(server: ServerThread, fake: FakeEngine, dialect: str) -> None:
    engine = engine_for(server, dialect)
    fake.add_responses(FakeEngine.tool_call("weather", {"city": "Oslo"}))
    result = engine.chat("tiny:1b", USER, tools=[WEATHER], tool_choice="weather")
    assert [c.name for c in result.tool_calls] == ["weather"]
    # OpenAI sends tool_choice (the server enforces it); Ollama has no such field
    expected = "weather" if dialect == "openai" else "auto"
    assert fake.last_request.tool_choice == expected
    fake.add_responses("I will not call it.")
    with pytest.raises(ToolCallMissingError, match="tool_choice forced"):
        engine.chat("tiny:1b", USER, tools=[WEATHER], tool_choice="required")


def test_format_and_options_reach_the_server(
    server: ServerThread, fake: FakeEngine, dialect: str
) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    fake.add_responses('{"a": 1}', '{"a": 2}')
    engine = engine_for(server, dialect)
    options = {"temperature": 0.2, "seed": 7, "num_predict": 50, "stop": ["END"], "top_k": 5}
    assert engine.chat("tiny:1b", USER, format=schema, options=options).text == '{"a": 1}'
    request = fake.last_request
    assert request.format == schema
    for key, value in options.items():
        assert request.options[key] == value, key
    engine.chat("tiny:1b", USER, format="json")
    assert fake.last_request.format == "json"
    with pytest.raises(UnknownOptionError, match="temperature"):
        engine.chat("tiny:1b", USER, options={"temprature": 1})


def test_generate_raw_and_chat_form(server: ServerThread, fake: FakeEngine, dialect: str) -> None:
    fake.add_responses(" world", "Sure")
    engine = engine_for(server, dialect)
    assert engine.generate("tiny:1b", "Hello", raw=True).text == " world"
    assert fake.last_request.prompt == "Hello" and fake.last_request.raw
    assert engine.generate("tiny:1b", "Say hi", system="Be brief").text == "Sure"


def test_embeddings_batched_in_order(
    server: ServerThread, fake: FakeEngine, dialect: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import local_llm_runtime.remote.engine as remote_engine

    monkeypatch.setattr(remote_engine, "EMBED_BATCH", 2)
    texts = ["red apple", "green pear", "blue sky", "apple pie", "sky"]
    engine = engine_for(server, dialect)
    vectors = engine.embed("tiny:1b", texts)
    expected = FakeEngine().embed("tiny:1b", texts)
    assert len(vectors) == len(texts)
    for got, want in zip(vectors, expected, strict=True):
        assert got == pytest.approx(want, abs=1e-5)
        assert math.isclose(math.fsum(x * x for x in got), 1.0, rel_tol=1e-6)
    again = asyncio.run(engine.aembed("tiny:1b", texts[:3]))
    for got, want in zip(again, vectors[:3], strict=True):
        assert got == pytest.approx(want, abs=1e-6)
    assert engine.embed("tiny:1b", []) == []


def test_model_names(server: ServerThread, fake: FakeEngine, dialect: str) -> None:
    fake.add_responses("a", "b")
    engine = engine_for(server, dialect, model_map={"mine": "tiny:1b"})
    engine.chat("mine", USER)
    assert fake.last_request.model == "tiny:1b"
    engine.chat("TINY:1B", USER)  # case-insensitive
    assert fake.last_request.model == "tiny:1b"
    with pytest.raises(ModelNotFoundError, match=r"qwen2\.5:7b.*it has: tiny:1b"):
        engine.chat("qwen2.5:7b", USER)


def test_model_info_tokens_and_control(server: ServerThread, dialect: str) -> None:
    from local_llm_runtime.llama.engine import LlamaEngine

    engine = engine_for(server, dialect)
    info = engine.model_info("tiny:1b")
    assert info.name == "tiny:1b"
    if dialect == "ollama":  # /api/show: the served GGUF's trained context
        assert info.context_length == LlamaEngine().model_info("tiny:1b").context_length
        assert "tools" in info.capabilities
    # local-llm serve has no /tokenize: the local tokenizer of the pulled GGUF counts

    assert engine.tokenize("tiny:1b", "hello world") == LlamaEngine().tokenize(
        "tiny:1b", "hello world"
    )
    assert engine.preload("tiny:1b").name == "tiny:1b"
    assert isinstance(engine.ps(), list)
    assert engine.unload("tiny:1b") >= 0


def test_wrong_api_key(fake: FakeEngine, tiny_gguf: Path, dialect: str) -> None:
    ModelLibrary().create("tiny:1b", str(tiny_gguf))
    with ServerThread(make_app(fake, api_key="right-key")) as server:
        engine = engine_for(server, dialect, api_key="wrong-secret-key")
        with pytest.raises(AuthenticationError) as caught:
            engine.chat("tiny:1b", USER)
        assert "wrong-secret-key" not in str(caught.value)
        assert "wrong-secret-key" not in repr(engine) and "wrong-secret-key" not in repr(
            engine.http
        )
        fake.add_responses("ok")
        right = engine_for(server, dialect, api_key="right-key")
        assert right.chat("tiny:1b", USER).text == "ok"
