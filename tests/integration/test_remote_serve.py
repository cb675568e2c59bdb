"""The adapters against ``local-llm serve`` (the real engine, the demo model), in both dialects.

One server per module (uvicorn on a free loopback port) over a fresh in-process
engine whose store holds the demo model as ``qwen2.5-coder:0.5b``. The adapters
reach it only through ``base_url=``: ``<server>/v1`` (OpenAI's dialect) or
``<server>`` (Ollama's, detected). The server serves the same names as the
local store, so no model map is needed. Greedy, short generations.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.tools import tool
from pydantic import BaseModel, Field

from local_llm_integrations.langchain import ChatLocal, LocalEmbeddings
from local_llm_integrations.llama_index import LocalEmbedding
from local_llm_integrations.llama_index import LocalLLM as LlamaIndexLLM
from local_llm_runtime import backends
from local_llm_runtime.backends import create_engine
from local_llm_runtime.remote import RemoteEngine
from local_llm_runtime.settings import RuntimeSettings
from local_llm_runtime.store.library import ModelLibrary
from tests.support.server import ServerThread, make_app

MODEL = "qwen2.5-coder:0.5b"


@pytest.fixture(scope="module")
def server(demo_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    root = tmp_path_factory.mktemp("serve-remote")
    runtime = RuntimeSettings.from_env(
        {"LOCAL_LLM_HOME": str(root / "home"), "HF_HOME": str(root / "hf"), "HF_HUB_OFFLINE": "1"}
    )
    library = ModelLibrary(runtime)
    library.create(MODEL, str(demo_model))
    engine = create_engine(settings=runtime)
    thread = ServerThread(make_app(engine, library=library, runtime=runtime))
    try:
        with thread as running:
            yield running
    finally:
        for key in [k for k in backends._remote_engines if k[0].startswith(thread.url)]:
            backends._remote_engines.pop(key).close()  # type: ignore[attr-defined]
        engine.unload()


@pytest.fixture(scope="module", params=["openai", "ollama"])
def base_url(request: pytest.FixtureRequest, server: ServerThread) -> str:
    return server.url + ("/v1" if request.param == "openai" else "")


def chat(base_url: str, **kwargs: Any) -> ChatLocal:
    fields = {"model": MODEL, "base_url": base_url, "temperature": 0, "num_predict": 24}
    return ChatLocal(**{**fields, **kwargs})


@tool
def get_weather(city: str) -> str:
    """Get the current weather of a city."""
    return f"sunny in {city}"


class Person(BaseModel):
    """A person."""

    name: str = Field(description="The person's first name")
    age: int = Field(description="Age in years")


class Recorder(BaseCallbackHandler):
    def __init__(self) -> None:
        self.tokens: list[str] = []

    def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
        self.tokens.append(token)


def test_dialect_is_detected(base_url: str) -> None:
    engine = chat(base_url).serving_engine()
    assert isinstance(engine, RemoteEngine)
    assert engine.dialect() == ("openai" if base_url.endswith("/v1") else "ollama")


def test_invoke_with_usage(base_url: str) -> None:
    message = chat(base_url).invoke("Say hello in one word.")
    assert isinstance(message, AIMessage) and str(message.content).strip()
    usage = message.usage_metadata
    assert usage is not None and usage["input_tokens"] > 5 and 0 < usage["output_tokens"] <= 24


def test_stream_with_callbacks(base_url: str) -> None:
    recorder = Recorder()
    chunks = list(chat(base_url).stream("Count from 1 to 5.", config={"callbacks": [recorder]}))
    text = "".join(str(c.content) for c in chunks)
    assert len(chunks) > 2 and text.strip() and "".join(recorder.tokens) == text
    total = sum(chunks[1:], chunks[0])
    assert total.usage_metadata is not None and total.usage_metadata["output_tokens"] > 0


def test_tools_forced(base_url: str) -> None:
    model = chat(base_url, num_predict=64).bind_tools([get_weather], tool_choice="get_weather")
    message = model.invoke("What is the weather in Paris?")
    assert [c["name"] for c in message.tool_calls] == ["get_weather"]
    assert isinstance(message.tool_calls[0]["args"].get("city"), str)


def test_tools_auto(base_url: str) -> None:
    message = (
        chat(base_url, num_predict=64)
        .bind_tools([get_weather])
        .invoke("What is the weather in Paris?")
    )
    assert [c["name"] for c in message.tool_calls] == ["get_weather"]
    assert not message.invalid_tool_calls


def test_structured_output(base_url: str) -> None:
    model = chat(base_url, num_predict=64).with_structured_output(Person, method="json_schema")
    person = model.invoke("Alice is 30 years old. Extract the person.")
    assert isinstance(person, Person) and person.name and person.age >= 0


def test_embeddings(base_url: str) -> None:
    vectors = LocalEmbeddings(model=MODEL, base_url=base_url).embed_documents(["a cat", "a dog"])
    assert len(vectors) == 2 and len(vectors[0]) == len(vectors[1]) > 16
    assert abs(sum(x * x for x in vectors[0]) - 1) < 1e-3


def test_chain_and_llama_index(base_url: str) -> None:
    prompt = ChatPromptTemplate.from_messages([("user", "What is {thing}? Five words.")])
    assert (prompt | chat(base_url) | StrOutputParser()).invoke({"thing": "rain"}).strip()
    llm = LlamaIndexLLM(model=MODEL, base_url=base_url, temperature=0, max_tokens=24)
    assert llm.complete("Say hello.").text.strip()
    assert llm.metadata.context_window > 0
    embedding = LocalEmbedding(model=MODEL, base_url=base_url)
    assert len(embedding.get_text_embedding_batch(["one", "two"])) == 2
