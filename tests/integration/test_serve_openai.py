"""OpenAI's API of ``local-llm serve`` over the real engine and the demo model, with real clients.

One server per module (uvicorn on a free loopback port) over a fresh
``create_engine()`` whose store (a temp ``LOCAL_LLM_HOME``) holds the demo
model as ``qwen2.5-coder:0.5b``. Clients: the official ``openai`` SDK,
LangChain's ``ChatOpenAI`` and LlamaIndex's ``OpenAILike``, unchanged, pointed at
``<server>/v1``. Generations are greedy and short: the machine has two cores.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from langchain_core.messages import AIMessageChunk
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from llama_index.core.llms import ChatMessage
from llama_index.core.tools import FunctionTool
from llama_index.llms.openai_like import OpenAILike
from pydantic import BaseModel, Field

from local_llm_runtime.backends import create_engine
from local_llm_runtime.settings import RuntimeSettings
from local_llm_runtime.store.library import ModelLibrary
from tests.support.server import ServerThread, make_app

MODEL = "qwen2.5-coder:0.5b"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather of a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "The city"}},
            "required": ["city"],
        },
    },
}
ASK_WEATHER = [{"role": "user", "content": "What is the weather in Paris?"}]


class Answer(BaseModel):
    """The answer to an arithmetic question."""

    value: int = Field(description="The number")


@tool
def get_weather(city: str) -> str:
    """Get the current weather of a city."""
    return f"sunny in {city}"


def weather_of(city: str) -> str:
    """Get the current weather of a city."""
    return f"sunny in {city}"


@pytest.fixture(scope="module")
def server(demo_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    root = tmp_path_factory.mktemp("serve-openai")
    runtime = RuntimeSettings.from_env(
        {"LOCAL_LLM_HOME": str(root / "home"), "HF_HOME": str(root / "hf"), "HF_HUB_OFFLINE": "1"}
    )
    library = ModelLibrary(runtime)
    library.create(MODEL, str(demo_model))
    engine = create_engine(settings=runtime)
    try:
        with ServerThread(make_app(engine, library=library, runtime=runtime)) as running:
            yield running
    finally:
        engine.unload()


@pytest.fixture(scope="module")
def sdk(server: ServerThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0, timeout=600)


def test_sdk_chat_stream_with_usage(sdk: openai.OpenAI) -> None:
    stream = sdk.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Say hello."}],
        stream=True,
        stream_options={"include_usage": True},
        max_tokens=6,
        temperature=0,
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    assert chunks[-2].choices[0].finish_reason in ("stop", "length")
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None
    assert 0 < usage.completion_tokens <= 6 and usage.prompt_tokens > 5


def test_sdk_forced_tool_call(sdk: openai.OpenAI) -> None:
    response = sdk.chat.completions.create(
        model=MODEL,
        messages=ASK_WEATHER,  # type: ignore[arg-type]
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=48,
        temperature=0,
    )
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert "paris" in json.loads(call.function.arguments)["city"].lower()  # type: ignore[union-attr]


def test_sdk_structured_output_with_parse(sdk: openai.OpenAI) -> None:
    completion = sdk.chat.completions.parse(
        model=MODEL,
        messages=[{"role": "user", "content": "What is 2 + 3? Answer in JSON."}],
        response_format=Answer,
        max_tokens=32,
        temperature=0,
    )
    parsed = completion.choices[0].message.parsed
    assert isinstance(parsed, Answer)


def test_sdk_completions_embeddings_models(sdk: openai.OpenAI) -> None:
    completion = sdk.completions.create(
        model=MODEL, prompt="def add(a, b):\n", max_tokens=8, temperature=0
    )
    assert completion.choices[0].text
    assert completion.usage is not None and completion.usage.completion_tokens <= 8

    vectors = sdk.embeddings.create(model=MODEL, input=["red apple", "green pear"])  # base64
    assert len(vectors.data) == 2 and len(vectors.data[0].embedding) == 896
    assert math.isclose(math.fsum(x * x for x in vectors.data[0].embedding), 1.0, rel_tol=1e-3)
    assert vectors.usage.prompt_tokens >= 4
    floats = sdk.embeddings.create(model=MODEL, input="red apple", encoding_format="float")
    assert floats.data[0].embedding == pytest.approx(vectors.data[0].embedding, abs=1e-4)

    assert MODEL in [m.id for m in sdk.models.list()]
    assert sdk.models.retrieve(MODEL).id == MODEL


def test_async_sdk_stream(server: ServerThread) -> None:
    async def run() -> str:
        client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="x", timeout=600)
        stream = await client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Say hi."}],
            stream=True,
            max_tokens=4,
            temperature=0,
        )
        parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
        await client.close()
        return "".join(parts)

    assert asyncio.run(run()).strip()


@pytest.fixture(scope="module")
def chat_openai(server: ServerThread) -> ChatOpenAI:
    return ChatOpenAI(
        base_url=server.url + "/v1",
        api_key="x",  # type: ignore[arg-type]
        model=MODEL,
        temperature=0,
        max_tokens=32,  # type: ignore[call-arg]
        max_retries=0,
        timeout=600,
    )


def test_langchain_chat_openai_invoke_and_stream(chat_openai: ChatOpenAI) -> None:
    short = chat_openai.bind(max_tokens=6)
    reply = short.invoke("Say hello.")
    assert isinstance(reply.content, str) and reply.content.strip()
    assert reply.usage_metadata is not None and reply.usage_metadata["output_tokens"] <= 6
    chunks = list(short.stream("Say hello."))
    assert len(chunks) > 1 and all(isinstance(c, AIMessageChunk) for c in chunks)
    assert "".join(str(c.content) for c in chunks).strip()


def test_langchain_chat_openai_tools_and_structured_output(chat_openai: ChatOpenAI) -> None:
    bound = chat_openai.bind_tools([get_weather], tool_choice="get_weather", max_tokens=64)
    reply = bound.invoke("What is the weather in Paris?")
    assert reply.tool_calls and reply.tool_calls[0]["name"] == "get_weather"  # type: ignore[attr-defined]
    assert "paris" in reply.tool_calls[0]["args"]["city"].lower()  # type: ignore[attr-defined]

    structured = chat_openai.with_structured_output(Answer)
    answer = structured.invoke("What is 2 + 3? Answer in JSON.")
    assert isinstance(answer, Answer)


@pytest.fixture(scope="module")
def openai_like(server: ServerThread) -> OpenAILike:
    return OpenAILike(
        model=MODEL,
        api_base=server.url + "/v1",
        api_key="x",
        is_chat_model=True,
        is_function_calling_model=True,
        context_window=4096,
        max_tokens=32,
        temperature=0,
        max_retries=0,
        timeout=600,
    )


def test_llama_index_openai_like_chat_stream_and_tool_call(openai_like: OpenAILike) -> None:
    hello = [ChatMessage(role="user", content="Say hello.")]
    reply = openai_like.chat(hello, max_tokens=6)
    assert (reply.message.content or "").strip()
    deltas = [r.delta or "" for r in openai_like.stream_chat(hello, max_tokens=6)]
    assert len(deltas) > 1 and "".join(deltas).strip()

    weather = FunctionTool.from_defaults(fn=weather_of, name="get_weather")
    response = openai_like.chat_with_tools(
        [weather], user_msg="What is the weather in Paris?", tool_required=True
    )
    calls = openai_like.get_tool_calls_from_response(response, error_on_no_tool_call=True)
    assert calls[0].tool_name == "get_weather"
    assert "paris" in str(calls[0].tool_kwargs.get("city", "")).lower()
