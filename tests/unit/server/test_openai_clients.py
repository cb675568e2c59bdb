"""LangChain's ``ChatOpenAI`` and LlamaIndex's ``OpenAILike``, unchanged, against the server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from llama_index.core.llms import ChatMessage
from llama_index.core.tools import FunctionTool
from llama_index.llms.openai_like import OpenAILike
from pydantic import BaseModel

from local_llm_runtime.testing import FakeEngine
from tests.support.server import ServerThread, make_app


class Answer(BaseModel):
    value: int


@tool
def get_weather(city: str) -> str:
    """Get the current weather of a city."""
    return f"sunny in {city}"


def weather_of(city: str) -> str:
    """Get the current weather of a city."""
    return f"sunny in {city}"


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def url(engine: FakeEngine) -> Iterator[str]:
    with ServerThread(make_app(engine)) as server:
        yield server.url + "/v1"


def test_chat_openai(url: str, engine: FakeEngine) -> None:
    llm = ChatOpenAI(base_url=url, api_key="x", model="m", max_retries=0)  # type: ignore[arg-type]
    engine.add_responses("Hi there", "Hi there")
    reply = llm.invoke("hi", max_tokens=5)
    assert reply.content == "Hi there"
    assert engine.last_request.options == {"num_predict": 5}
    assert reply.usage_metadata is not None and reply.usage_metadata["output_tokens"] == 2
    assert "".join(str(c.content) for c in llm.stream("hi")) == "Hi there"

    engine.add_responses(FakeEngine.tool_call("get_weather", {"city": "Paris"}))
    call = llm.bind_tools([get_weather], tool_choice="any").invoke("weather?").tool_calls[0]  # type: ignore[attr-defined]
    assert (call["name"], call["args"]) == ("get_weather", {"city": "Paris"})
    assert engine.last_request.tool_choice == "required"

    engine.add_responses('{"value": 5}')
    assert llm.with_structured_output(Answer).invoke("2 + 3?") == Answer(value=5)
    schema = engine.last_request.format
    assert isinstance(schema, dict) and schema["properties"]["value"]["type"] == "integer"


def test_openai_like(url: str, engine: FakeEngine) -> None:
    llm = OpenAILike(
        model="m", api_base=url, api_key="x", is_chat_model=True,
        is_function_calling_model=True, max_retries=0,
    )  # fmt: skip
    engine.add_responses("Hello", "Hello there")
    hello = [ChatMessage(role="user", content="hi")]
    assert llm.chat(hello).message.content == "Hello"
    assert "".join(r.delta or "" for r in llm.stream_chat(hello)) == "Hello there"

    engine.add_responses(FakeEngine.tool_call("get_weather", {"city": "Paris"}))
    tool_fn = FunctionTool.from_defaults(fn=weather_of, name="get_weather")
    response = llm.chat_with_tools([tool_fn], user_msg="weather?", tool_required=True)
    calls = llm.get_tool_calls_from_response(response)
    assert (calls[0].tool_name, calls[0].tool_kwargs) == ("get_weather", {"city": "Paris"})
    assert engine.last_request.tool_choice == "required"
