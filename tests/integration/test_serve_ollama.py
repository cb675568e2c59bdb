"""``local-llm serve``'s Ollama API over the REAL engine and demo model, with real clients.

One server per module (the 0.5B model on shared cores is slow): the official
``ollama`` SDK, ``langchain_ollama`` (and LangChain's standard integration suite
for ``ChatOllama``), and LlamaIndex's ``Ollama`` talk to it over loopback HTTP.
Answers are short (``num_predict``) and greedy (``temperature`` 0).
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ollama
import pytest
from langchain_ollama import ChatOllama, OllamaEmbeddings
from langchain_tests.integration_tests import ChatModelIntegrationTests
from pydantic import BaseModel

from local_llm_runtime.backends import create_engine
from local_llm_runtime.settings import RuntimeSettings
from local_llm_runtime.store.library import ModelLibrary
from tests.support.server import ServerThread, make_app

MODEL = "qwen2.5-coder:0.5b"
SHORT = {"temperature": 0, "num_predict": 16}

_server: ServerThread | None = None


@pytest.fixture(scope="module", autouse=True)
def server(demo_model: Path) -> Iterator[ServerThread]:
    """A server over a real engine whose store names the demo model ``qwen2.5-coder:0.5b``."""
    global _server
    with tempfile.TemporaryDirectory(prefix="serve-ollama-") as home:
        env = {"LOCAL_LLM_HOME": home, "HF_HOME": str(Path(home) / "hf"), "HF_HUB_OFFLINE": "1"}
        runtime = RuntimeSettings.from_env(env)
        library = ModelLibrary(runtime)
        library.create(MODEL, str(demo_model))
        engine = create_engine(settings=runtime)
        with ServerThread(make_app(engine, library=library, runtime=runtime)) as running:
            _server = running
            yield running
            _server = None
        engine.unload()


def _url() -> str:
    assert _server is not None, "the module's server fixture is not running"
    return _server.url


def _ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


# ---- the official ollama SDK -------------------------------------------------------------------


def test_sdk_chat_sync_stream_and_async(server: ServerThread) -> None:
    client = ollama.Client(host=server.url)
    reply = client.chat(model=MODEL, messages=_ask("Say hello."), options=SHORT)
    assert reply.message.content and reply.done is True
    assert reply.eval_count and 0 < reply.eval_count <= 16
    assert reply.prompt_eval_count and reply.total_duration and reply.eval_duration

    parts = list(
        client.chat(model=MODEL, messages=_ask("Count to three."), options=SHORT, stream=True)
    )
    assert len(parts) > 2 and parts[-1].done is True
    assert "".join(p.message.content or "" for p in parts).strip()

    async def run() -> str:
        aclient = ollama.AsyncClient(host=server.url)
        whole = await aclient.chat(model=MODEL, messages=_ask("Say hi."), options=SHORT)
        return whole.message.content or ""

    assert asyncio.run(run()).strip()


def test_sdk_generate_embed_show_ps(server: ServerThread) -> None:
    client = ollama.Client(host=server.url)
    gen = client.generate(model=MODEL, prompt="def add(a, b):", options=SHORT)
    assert gen.response and gen.done_reason in ("stop", "length")
    vectors = client.embed(model=MODEL, input=["red apple", "blue sky"]).embeddings
    assert len(vectors) == 2 and len(vectors[0]) == 896
    shown = client.show(MODEL)
    assert shown.capabilities is not None and "tools" in shown.capabilities
    assert shown.details is not None and shown.details.family == "qwen2"
    assert shown.template and "tool" in shown.template
    running = client.ps().models
    assert any(m.model == MODEL and (m.context_length or 0) > 0 for m in running)
    assert [m.model for m in client.list().models] == [MODEL]


class City(BaseModel):
    name: str
    country: str


def test_sdk_format_with_a_pydantic_schema_parses(server: ServerThread) -> None:
    client = ollama.Client(host=server.url)
    reply = client.chat(
        model=MODEL,
        messages=_ask("Give the capital of France as JSON."),
        format=City.model_json_schema(),
        options={"temperature": 0, "num_predict": 48},
    )
    city = City.model_validate_json(reply.message.content or "")
    assert city.name


def get_weather(city: str) -> str:
    """Get the current weather of a city.

    Args:
        city: The city's name.
    """
    return f"Sunny in {city}"


def test_sdk_tool_call(server: ServerThread) -> None:
    client = ollama.Client(host=server.url)
    reply = client.chat(
        model=MODEL,
        messages=_ask("What is the weather in Paris? Use the tool."),
        tools=[get_weather],
        options={"temperature": 0, "num_predict": 64},
    )
    calls = reply.message.tool_calls or []
    assert calls and calls[0].function.name == "get_weather"
    assert "paris" in str(calls[0].function.arguments.get("city", "")).lower()


# ---- LangChain ---------------------------------------------------------------------------------


def test_chat_ollama_and_ollama_embeddings(server: ServerThread) -> None:
    llm = ChatOllama(model=MODEL, base_url=server.url, temperature=0, num_predict=16)
    answer = llm.invoke("Say hello.")
    assert isinstance(answer.content, str) and answer.content
    assert answer.usage_metadata and answer.usage_metadata["output_tokens"] > 0
    assert "".join(str(c.content) for c in llm.stream("Count to three.")).strip()
    embedder = OllamaEmbeddings(model=MODEL, base_url=server.url)
    assert len(embedder.embed_query("hello")) == 896
    assert len(embedder.embed_documents(["a", "b"])) == 2


class TestChatOllamaAgainstServe(ChatModelIntegrationTests):
    """LangChain's standard suite for ``ChatOllama`` pointed at ``local-llm serve``."""

    @property
    def chat_model_class(self) -> type[ChatOllama]:
        return ChatOllama

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"model": MODEL, "base_url": _url(), "temperature": 0, "num_ctx": 4096}

    @property
    def has_tool_calling(self) -> bool:
        return True

    @property
    def has_tool_choice(self) -> bool:
        return False  # ChatOllama sends no tool_choice (Ollama's API has none)

    @property
    def has_structured_output(self) -> bool:
        return True

    @property
    def supports_json_mode(self) -> bool:
        return True

    @property
    def returns_usage_metadata(self) -> bool:
        return True

    _NO_FORCED_CALL = (
        "0.5B model limit: asked without a forced tool_choice (Ollama's API and ChatOllama "
        "have none), Qwen2.5-Coder-0.5B writes the call as a ```json block in its answer "
        "instead of its <tool_call> syntax; ChatLocal's suite passes it with tool_choice"
    )

    @pytest.mark.xfail(reason=_NO_FORCED_CALL, strict=False)
    def test_tool_calling_with_no_arguments(self, model: Any) -> None:
        super().test_tool_calling_with_no_arguments(model)

    @pytest.mark.xfail(reason=_NO_FORCED_CALL, strict=False)
    def test_unicode_tool_call_integration(self, model: Any) -> None:
        super().test_unicode_tool_call_integration(model)


# ---- LlamaIndex --------------------------------------------------------------------------------


def test_llama_index_ollama_chat_stream_and_tools(server: ServerThread) -> None:
    from llama_index.core.llms import ChatMessage
    from llama_index.core.tools import FunctionTool
    from llama_index.llms.ollama import Ollama

    llm = Ollama(
        model=MODEL,
        base_url=server.url,
        request_timeout=600,
        temperature=0,
        context_window=4096,
        additional_kwargs={"num_predict": 32},
    )
    reply = llm.chat([ChatMessage(role="user", content="Say hello.")])
    assert reply.message.content
    streamed = "".join(
        r.delta or "" for r in llm.stream_chat([ChatMessage(role="user", content="Count to 3.")])
    )
    assert streamed.strip()
    tool = FunctionTool.from_defaults(fn=get_weather)
    response = llm.chat_with_tools([tool], user_msg="What is the weather in Paris? Use the tool.")
    calls = llm.get_tool_calls_from_response(response, error_on_no_tool_call=True)
    assert calls[0].tool_name == "get_weather"
    assert "paris" in str(calls[0].tool_kwargs.get("city", "")).lower()
