"""The adapters with ``base_url=`` against ``local-llm serve`` (FakeEngine), as a user drives them."""

from __future__ import annotations

import asyncio
import pickle
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from local_llm_runtime.backends import remote_engine, remote_settings_for
from local_llm_runtime.store.library import ModelLibrary
from local_llm_runtime.testing import FakeEngine
from tests.support.server import ServerThread, make_app

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
def server(tiny_gguf: Path) -> Iterator[ServerThread]:
    ModelLibrary().create("tiny:1b", str(tiny_gguf))
    with ServerThread(make_app(FakeEngine(responses=["Hello!"], cycle=True))) as running:
        yield running


@pytest.fixture(params=["openai", "ollama"])
def base_url(request: pytest.FixtureRequest, server: ServerThread) -> str:
    return server.url + "/v1" if request.param == "openai" else server.url


def test_langchain_every_entry_point(base_url: str) -> None:
    from local_llm_integrations import ChatLocal

    chat = ChatLocal(model="tiny:1b", base_url=base_url, api_key="sk-x")
    assert chat.invoke("hi").content == "Hello!"
    assert "".join(str(c.content) for c in chat.stream("hi")) == "Hello!"
    assert asyncio.run(chat.ainvoke("hi")).content == "Hello!"

    async def astream() -> str:
        return "".join([str(c.content) async for c in chat.astream("hi")])

    assert asyncio.run(astream()) == "Hello!"
    assert [m.content for m in chat.batch(["a", "b", "c"])] == ["Hello!"] * 3
    assert [m.content for m in asyncio.run(chat.abatch(["a", "b", "c"]))] == ["Hello!"] * 3
    again = pickle.loads(pickle.dumps(chat))
    assert again.base_url == base_url and again.invoke("hi").content == "Hello!"


def test_llamaindex_every_entry_point(base_url: str) -> None:
    from llama_index.core.llms import ChatMessage

    from local_llm_integrations.llama_index import LocalLLM

    llm = LocalLLM(model="tiny:1b", base_url=base_url)
    msgs = [ChatMessage(role="user", content="hi")]
    assert llm.chat(msgs).message.content == "Hello!"
    assert "".join(r.delta or "" for r in llm.stream_chat(msgs)) == "Hello!"
    assert asyncio.run(llm.achat(msgs)).message.content == "Hello!"

    async def astream() -> str:
        return "".join([r.delta or "" async for r in await llm.astream_chat(msgs)])

    assert asyncio.run(astream()) == "Hello!"
    assert llm.complete("hi").text == "Hello!"


def test_one_engine_for_8_threads_and_8_coroutines(base_url: str) -> None:
    from local_llm_integrations import ChatLocal

    chat = ChatLocal(model="tiny:1b", base_url=base_url)
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: chat.invoke(f"q{i}").content, range(16)))
    assert answers == ["Hello!"] * 16

    async def many() -> list[object]:
        results = await asyncio.gather(*(chat.ainvoke(f"q{i}") for i in range(8)))
        return [r.content for r in results]

    assert asyncio.run(many()) == ["Hello!"] * 8
    assert asyncio.run(many()) == ["Hello!"] * 8  # a second loop
    assert remote_engine(remote_settings_for(base_url)) is remote_engine(
        remote_settings_for(base_url)
    )


def test_engine_and_base_url_are_exclusive(base_url: str) -> None:
    from local_llm_integrations import ChatLocal
    from local_llm_integrations.llama_index import LocalEmbedding, LocalLLM

    fake = FakeEngine()
    with pytest.raises(ValueError, match="engine"):
        ChatLocal(model="m", base_url=base_url, engine=fake)
    with pytest.raises(ValueError, match="engine"):
        LocalLLM(model="m", base_url=base_url, engine=fake)
    with pytest.raises(ValueError, match="engine"):
        LocalEmbedding(model_name="m", base_url=base_url, engine=fake)
    chat = ChatLocal(model="m", base_url=base_url)
    with pytest.raises(ValueError, match="engine"):
        chat.engine = fake


def test_bind_tools_and_structured_output(base_url: str) -> None:
    from pydantic import BaseModel

    from local_llm_integrations import ChatLocal

    chat = ChatLocal(model="tiny:1b", base_url=base_url)
    bound = chat.bind_tools([WEATHER])
    assert bound.invoke("weather in Paris?").content == "Hello!"

    class Answer(BaseModel):
        text: str

    structured = chat.with_structured_output(Answer)
    with pytest.raises(Exception):  # noqa: B017,PT011 - "Hello!" is no JSON: an error, not None
        structured.invoke("hi")


def test_embeddings_batch(base_url: str) -> None:
    from local_llm_integrations.llama_index import LocalEmbedding

    embed = LocalEmbedding(model_name="tiny:1b", base_url=base_url, embed_batch_size=3)
    texts = [f"text {i}" for i in range(70)]
    vectors = embed.get_text_embedding_batch(texts)
    assert len(vectors) == 70
    assert vectors[5] == embed.get_text_embedding("text 5")
    assert asyncio.run(embed.aget_text_embedding_batch(texts)) == vectors


def test_a_model_added_after_the_first_lookup(base_url: str, tiny_gguf: Path) -> None:
    from local_llm_runtime.errors import ModelNotFoundError
    from local_llm_runtime.remote import RemoteEngine
    from local_llm_runtime.settings import RemoteSettings

    engine = RemoteEngine(
        remote=RemoteSettings(base_url=base_url, model_map={"team/qwen:7b": "org/served:1b"})
    )
    user = [{"role": "user", "content": "hi"}]
    assert engine.chat("tiny:1b", user).text == "Hello!"
    with pytest.raises(ModelNotFoundError, match=r"tiny:1b"):
        engine.chat("later:2b", user)
    ModelLibrary().create("later:2b", str(tiny_gguf))
    assert engine.chat("later:2b", user).text == "Hello!"
    assert asyncio.run(engine.achat("later:2b", user)).text == "Hello!"
    # A mapped name (slashes, colons) is sent as the server's name, unresolved.
    assert engine.chat("team/qwen:7b", user).text == "Hello!"
    assert engine.served_name("team/qwen:7b") == "org/served:1b"
