"""LlamaIndex adapters on the real Qwen2.5-Coder-0.5B-Instruct.

The scenarios of llama-index-llms-ollama's own test suite (chat, complete,
streams, async, tools sync/streaming/async, no tools), ported to ``LocalLLM``,
plus structured output, a RAG pipeline, a ``FunctionAgent`` and the shared
runtime. Generations are short (greedy, ``num_predict`` <= 64): the machine has
two cores. Every test uses the process-wide engine, so the model loads once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from llama_index.core import Settings, SimpleDirectoryReader, VectorStoreIndex
from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.base.llms.base import BaseLLM
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.llm import LLMChatInProgressEvent
from llama_index.core.llms import ChatMessage
from llama_index.core.prompts import PromptTemplate
from llama_index.core.tools import FunctionTool
from pydantic import BaseModel, Field

from local_llm_integrations.llama_index import LocalEmbedding, LocalLLM
from local_llm_runtime.llama.engine import default_engine


class Song(BaseModel):
    """A song with name and artist."""

    artist_name: str = Field(description="The name of the artist")
    song_name: str = Field(description="The name of the song")


def generate_song(artist_name: str, song_name: str) -> Song:
    """Generates a song with provided name and artist."""
    return Song(artist_name=artist_name, song_name=song_name)


def add(a: int, b: int) -> int:
    """Add two integers and return the sum."""
    return a + b


song_tool = FunctionTool.from_defaults(fn=generate_song)
add_tool = FunctionTool.from_defaults(fn=add)
HELLO = [ChatMessage(role="user", content="Hello!")]


@pytest.fixture(scope="module")
def model(demo_model: Path) -> Iterator[str]:
    yield str(demo_model)
    default_engine().unload(str(demo_model))  # free the memory for the next module


@pytest.fixture
def llm(model: str) -> LocalLLM:
    return LocalLLM(model=model, temperature=0, num_predict=24)


class Collector(BaseEventHandler):
    events: list[BaseEvent]

    @classmethod
    def class_name(cls) -> str:
        return "Collector"

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        self.events.append(event)


# ---- the llama-index-llms-ollama scenarios ------------------------------------------


def test_embedding_class() -> None:
    names_of_base_classes = [b.__name__ for b in LocalLLM.__mro__]
    assert BaseLLM.__name__ in names_of_base_classes


def test_chat(llm: LocalLLM) -> None:
    response = llm.chat(HELLO)
    assert response is not None
    assert (response.message.content or "").strip() != ""
    assert response.raw["usage"]["completion_tokens"] > 0


def test_complete(llm: LocalLLM) -> None:
    response = llm.complete("Hello!")
    assert response is not None
    assert str(response).strip() != ""


def test_stream_chat_emits_token_events(llm: LocalLLM) -> None:
    collector = Collector(events=[])
    root = get_dispatcher()
    root.add_event_handler(collector)
    try:
        responses = list(llm.stream_chat(HELLO))
    finally:
        root.event_handlers.remove(collector)
    assert all(r.delta is not None for r in responses)
    text = "".join(r.delta or "" for r in responses)
    assert text.strip() != ""
    assert text == responses[-1].message.content
    in_progress = [e for e in collector.events if isinstance(e, LLMChatInProgressEvent)]
    assert len(in_progress) == len(responses) > 2  # one event per token, as it streams


def test_stream_complete(llm: LocalLLM) -> None:
    responses = list(llm.stream_complete("Hello!"))
    for r in responses:
        assert r is not None
        assert r.delta is not None
    assert responses[-1].text.strip() != ""


async def test_async_paths_keep_the_event_loop_free(llm: LocalLLM) -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        started = time.monotonic()
        response = await llm.achat(HELLO)
        elapsed = time.monotonic() - started
    finally:
        task.cancel()
    assert str(response).strip() != ""
    assert ticks >= elapsed / 0.01 / 4  # the loop kept running while the model generated

    assert str(await llm.acomplete("Hello!")).strip() != ""
    stream = await llm.astream_chat(HELLO)
    chat_deltas = [r.delta async for r in stream]
    assert "".join(d or "" for d in chat_deltas).strip() != ""
    completion_stream = await llm.astream_complete("Hello!")
    completions = [r async for r in completion_stream]
    assert completions[-1].text.strip() != ""


def _check_song_call(llm: LocalLLM, response: Any) -> None:
    tool_calls = llm.get_tool_calls_from_response(response)
    assert len(tool_calls) == 1
    assert tool_calls[0].tool_name == song_tool.metadata.name
    tool_result = song_tool(**tool_calls[0].tool_kwargs)
    assert isinstance(tool_result.raw_output, Song)


def test_chat_with_tools(model: str) -> None:
    llm = LocalLLM(model=model, temperature=0, num_predict=64)
    response = llm.chat_with_tools(
        [song_tool], user_msg="Hello! Generate a random artist and song.", tool_required=True
    )
    _check_song_call(llm, response)


def test_stream_chat_with_tools(model: str) -> None:
    llm = LocalLLM(model=model, temperature=0, num_predict=64)
    responses = list(
        llm.stream_chat_with_tools(
            [song_tool], user_msg="Hello! Generate a random artist and song.", tool_required=True
        )
    )
    _check_song_call(llm, responses[-1])


async def test_async_chat_with_tools(model: str) -> None:
    llm = LocalLLM(model=model, temperature=0, num_predict=64)
    response = await llm.achat_with_tools(
        [song_tool], user_msg="Hello! Generate a random artist and song.", tool_required=True
    )
    _check_song_call(llm, response)


def test_chat_with_tools_returns_empty_array_if_no_tools_were_called(llm: LocalLLM) -> None:
    response = llm.chat(
        tools=[],
        messages=[
            ChatMessage(role="system", content="You are a useful tool calling agent."),
            ChatMessage(role="user", content="Hello, how are you?"),
        ],
    )
    assert response.message.additional_kwargs.get("tool_calls", []) == []
    assert llm.get_tool_calls_from_response(response, error_on_no_tool_call=False) == []


# ---- beyond the Ollama suite -----------------------------------------------------------


def test_auto_tool_call_and_predict_and_call(model: str) -> None:
    llm = LocalLLM(model=model, temperature=0, num_predict=48)
    response = llm.chat_with_tools([add_tool], user_msg="What is 12 + 30?")  # model's choice
    (call,) = llm.get_tool_calls_from_response(response)
    assert (call.tool_name, call.tool_kwargs) == ("add", {"a": 12, "b": 30})
    assert llm.predict_and_call([add_tool], user_msg="What is 12 + 30?").response == "42"


def test_per_call_options_override_fields(llm: LocalLLM) -> None:
    response = llm.chat([ChatMessage(role="user", content="Count from 1 to 20.")], max_tokens=3)
    assert response.raw["usage"]["completion_tokens"] == 3
    assert response.raw["finish_reason"] == "length"
    stopped = llm.complete("Count from 1 to 20, separated by commas.", stop=["5"])
    assert "5" not in stopped.text
    assert "4" in stopped.text


class Person(BaseModel):
    """A person mentioned in a text."""

    name: str = Field(description="Full name", max_length=40)
    age: int = Field(description="Age in years")
    city: str = Field(description="City of residence", max_length=40)


EXTRACT = PromptTemplate("Extract the person from this text: {text}")
TEXT = "Maria Lopez is 34 years old and lives in Madrid."


def test_structured_predict_always_validates(model: str) -> None:
    llm = LocalLLM(model=model, temperature=0, num_predict=64)
    person = llm.structured_predict(Person, EXTRACT, text=TEXT)
    assert person == Person(name="Maria Lopez", age=34, city="Madrid")
    structured = llm.as_structured_llm(Person)
    response = structured.chat([ChatMessage(role="user", content=f"Extract the person: {TEXT}")])
    assert isinstance(response.raw, Person)
    assert response.raw.age == 34
    outputs = list(llm.stream_structured_predict(Person, EXTRACT, text=TEXT))
    assert len(outputs) > 1  # partial objects while the JSON streams
    assert outputs[-1] == person


async def test_astructured_predict(model: str) -> None:
    llm = LocalLLM(model=model, temperature=0, num_predict=64)
    person = await llm.astructured_predict(Person, EXTRACT, text=TEXT)
    assert isinstance(person, Person)
    assert person.city == "Madrid"


# ---- RAG, agent, shared runtime -----------------------------------------------------------------

CORPUS = {
    "robot.txt": "The maintenance robot on the research station Halcyon-7 is called Brindle. "
    "Brindle was assembled in Tromso and its battery lasts nineteen hours.",
    "bakery.txt": "The Quillfeather Bakery in Dunmore is famous for its saffron buns. "
    "Its head baker is Oswin Pell and it opens at 5:40 every morning.",
    "lighthouse.txt": "The Varnholm lighthouse on Skerra Island was built in 1871 by the "
    "engineer Agnes Thorvald. Its lamp can be seen from 31 kilometres away.",
    "garden.txt": "The botanical garden of Lessing Park holds 412 species of fern. Its "
    "glasshouse was restored in 2009 after a storm.",
}


@pytest.fixture
def settings(model: str) -> Iterator[None]:
    Settings.llm = LocalLLM(model=model, temperature=0, num_predict=48)
    Settings.embed_model = LocalEmbedding(model=model)
    yield
    Settings._llm = None
    Settings._embed_model = None


@pytest.mark.usefixtures("settings")
def test_rag_answers_from_the_corpus(tmp_path: Path) -> None:
    for name, text in CORPUS.items():
        (tmp_path / name).write_text(text)
    documents = SimpleDirectoryReader(str(tmp_path)).load_data()
    for document in documents:
        document.excluded_embed_metadata_keys = list(document.metadata)
    index = VectorStoreIndex.from_documents(documents)  # Settings.embed_model

    query_engine = index.as_query_engine(similarity_top_k=1, streaming=True)  # Settings.llm
    response = query_engine.query("What is the maintenance robot on Halcyon-7 called?")
    answer = "".join(response.response_gen)  # type: ignore[union-attr]
    assert "Brindle" in answer
    assert response.source_nodes[0].node.metadata["file_name"] == "robot.txt"

    retriever = index.as_retriever(similarity_top_k=1)
    (hit,) = retriever.retrieve("Who built the Varnholm lighthouse?")
    assert hit.node.metadata["file_name"] == "lighthouse.txt"


async def test_function_agent_uses_a_tool(model: str) -> None:
    used: list[str] = []

    def get_secret_code(name: str) -> str:
        """Return the secret code of a person."""
        used.append(name)
        return f"The secret code of {name} is 7421."

    llm = LocalLLM(model=model, temperature=0, num_predict=64)
    assert llm.metadata.is_function_calling_model
    agent = FunctionAgent(
        tools=[get_secret_code],
        llm=llm,
        system_prompt="You are a helpful assistant. Use the tools.",
        initial_tool_choice="get_secret_code",
    )
    result = await agent.run(user_msg="What is the secret code of Alice?", max_iterations=4)
    assert used
    assert used[0] == "Alice"
    assert "7421" in str(result)


def test_one_loaded_instance_shared_by_every_adapter(model: str, demo_model: Path) -> None:
    # The default engine is process-wide: start from an empty pool so instances loaded by earlier
    # tests (with other load options, e.g. a smaller num_ctx) are not counted here.
    default_engine().unload()
    first = LocalLLM(model=model, temperature=0, num_predict=4)
    second = LocalLLM(model=model, temperature=0.7, top_k=10, num_predict=4)
    embedding = LocalEmbedding(model=model)
    first.complete("Hi")
    second.chat(HELLO)
    embedding.get_text_embedding("Hi")
    try:  # the LangChain adapter, when it is installed, shares the same instance
        from local_llm_integrations.langchain import ChatLocal
    except ImportError:
        pass
    else:
        ChatLocal(model=model, temperature=0, num_predict=4).invoke("Hi")
    entries = [p for p in default_engine().ps() if p.path == demo_model.resolve()]
    assert sorted(p.embedding for p in entries) == [False, True]  # one generation instance
