"""LocalLLM (LlamaIndex) plumbing: FakeEngine for exact arguments, the tiny model for real runs."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from llama_index.core.base.llms.types import ChatMessage, ThinkingBlock, ToolCallBlock
from llama_index.core.callbacks import CallbackManager, CBEventType, LlamaDebugHandler
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.llm import (
    LLMChatEndEvent,
    LLMChatInProgressEvent,
    LLMChatStartEvent,
    LLMStructuredPredictEndEvent,
)
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.prompts import PromptTemplate
from llama_index.core.tools import FunctionTool
from pydantic import BaseModel

from local_llm_integrations.llama_index import LocalLLM
from local_llm_runtime import ModelInfo
from local_llm_runtime.llama.engine import Engine
from local_llm_runtime.testing import FakeEngine, FakeRequest
from local_llm_runtime.types import (
    Chunk,
    FinalChunk,
    ReasoningDelta,
    TextDelta,
    Timings,
    ToolCallDelta,
    Usage,
)

FINAL = FinalChunk("stop", Usage(4, 2), Timings(0.0, 0.0, 0.01, 0.01, 4, 2), "stub")
USER = [ChatMessage(role="user", content="Hi")]


def stubbed(chunks: Sequence[Chunk] = (TextDelta("Hello"), FINAL), **fields: Any) -> LocalLLM:
    """A LocalLLM on a FakeEngine that answers every request with ``chunks``."""
    engine = FakeEngine([list(chunks)], cycle=True)
    return LocalLLM(model=fields.pop("model", "stub-model"), engine=engine, **fields)


def calls(llm: LocalLLM) -> list[FakeRequest]:
    assert isinstance(llm.engine, FakeEngine)
    return llm.engine.requests


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


class Collector(BaseEventHandler):
    events: list[BaseEvent]

    @classmethod
    def class_name(cls) -> str:
        return "Collector"

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        self.events.append(event)


@pytest.fixture
def collector() -> Iterator[Collector]:
    handler = Collector(events=[])
    root = get_dispatcher()
    root.add_event_handler(handler)
    yield handler
    root.event_handlers.remove(handler)


# ---- construction ------------------------------------------------------------------


def test_is_a_function_calling_llm() -> None:
    assert issubclass(LocalLLM, FunctionCallingLLM)


def test_construction_does_no_io_and_loads_no_backend() -> None:
    code = (
        "import sys\n"
        "from local_llm_integrations.llama_index import LocalLLM\n"
        "llm = LocalLLM(model='qwen2.5:72b', temperature=0.2)\n"
        "assert llm.engine is None and llm.model == 'qwen2.5:72b'\n"
        "print(sorted(m for m in sys.modules if m.startswith(('llama_cpp', 'local_llm_runtime.llama'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_aliases() -> None:
    llm = LocalLLM(model="m", max_tokens=5, thinking=False, context_window=1024)
    assert (llm.num_predict, llm.reasoning, llm.num_ctx) == (5, False, 1024)
    assert LocalLLM(model="m", num_predict=3, max_tokens=3).num_predict == 3
    # One setting under two names with two values is refused, not silently resolved.
    for twice in ({"num_predict": 3, "max_tokens": 9}, {"num_ctx": 512, "context_window": 1024}):
        with pytest.raises(ValueError, match="same setting; pass only one"):
            LocalLLM(model="m", **twice)


def test_preload_loads_once(tiny_gguf: Path) -> None:
    engine = Engine()
    try:
        LocalLLM(model=str(tiny_gguf), preload=True, engine=engine)
        assert [p.embedding for p in engine.ps()] == [False]
        LocalLLM(model=str(tiny_gguf), preload=True, temperature=0.1, engine=engine)  # same
        assert len(engine.ps()) == 1
    finally:
        engine.pool.close()


# ---- metadata (GGUF header, lazily) -------------------------------------------------------


def test_metadata_from_gguf_header(tiny_gguf: Path) -> None:
    meta = LocalLLM(model=str(tiny_gguf)).metadata  # tiny: 2048 trained, template without tools
    assert meta.context_window == 2048
    assert meta.is_chat_model is True
    assert meta.is_function_calling_model is False
    assert meta.model_name == str(tiny_gguf)
    assert LocalLLM(model=str(tiny_gguf), num_ctx=512).metadata.context_window == 512
    assert LocalLLM(model=str(tiny_gguf), num_ctx=100_000).metadata.context_window == 2048
    assert LocalLLM(model=str(tiny_gguf), num_predict=64).metadata.num_output == 64
    forced = LocalLLM(model=str(tiny_gguf), is_function_calling_model=True)
    assert forced.metadata.is_function_calling_model is True


def test_metadata_of_a_model_not_pulled_yet(fake_hub: object) -> None:
    meta = LocalLLM(model="qwen2.5:0.5b").metadata  # not in the store: no download
    assert meta.context_window == 4096
    assert meta.is_function_calling_model is True
    assert LocalLLM(model="qwen2.5:0.5b", num_ctx=2048).metadata.context_window == 2048
    assert fake_hub.count() == 0  # type: ignore[attr-defined]


def test_metadata_comes_from_the_engines_model_info() -> None:
    info = ModelInfo("m", "chat", ("completion",), context_length=1024)
    llm = LocalLLM(model="m", engine=FakeEngine(models={"m": info}))
    meta = llm.metadata
    assert (meta.context_window, meta.is_function_calling_model) == (1024, False)
    assert LocalLLM(model="m", num_ctx=512, engine=llm.engine).metadata.context_window == 512
    capped = LocalLLM(model="m", num_ctx=9999, engine=llm.engine).metadata
    assert capped.context_window == 1024  # never above the trained context
    tools = ModelInfo("t", "chat", ("completion", "tools"), context_length=None)
    meta = LocalLLM(model="t", engine=FakeEngine(models={"t": tools})).metadata
    assert (meta.context_window, meta.is_function_calling_model) == (4096, True)
    missing = LocalLLM(model="other", num_ctx=2048, engine=FakeEngine(models={"m": info}))
    assert missing.metadata.context_window == 2048  # ModelNotFoundError: the fallback
    assert missing.metadata.is_function_calling_model is True


# ---- options and thinking plumbing ------------------------------------------------------


def test_fields_and_per_call_options_reach_the_engine() -> None:
    llm = stubbed(temperature=0.3, num_predict=20, stop=["\n\n"], keep_alive="1m", seed=7)
    llm.chat(USER, temperature=0.0, max_tokens=5)
    request = calls(llm)[-1]
    assert request.model == "stub-model"
    assert request.messages == [{"role": "user", "content": "Hi"}]
    assert request.options == {"temperature": 0.0, "num_predict": 5, "stop": ["\n\n"], "seed": 7}
    assert request.keep_alive == "1m"
    assert request.reasoning == "separate"
    assert request.format is None
    assert request.tools is None


@pytest.mark.parametrize(
    ("field", "call", "mode"),
    [
        (None, {}, "separate"),
        (True, {}, "separate"),
        (False, {}, "hide"),
        ("inline", {}, "inline"),
        (False, {"think": True}, "separate"),
        (True, {"thinking": False}, "hide"),
        (None, {"reasoning": "inline"}, "inline"),
    ],
)
def test_thinking_on_off_reaches_the_engine(field: Any, call: dict[str, Any], mode: str) -> None:
    llm = stubbed(thinking=field)
    llm.chat(USER, **call)
    assert calls(llm)[-1].reasoning == mode


THINKING = [ReasoningDelta("2+2 "), ReasoningDelta("is 4"), TextDelta("4"), FINAL]


def test_thinking_goes_to_blocks_and_deltas_not_the_answer() -> None:
    llm = stubbed(THINKING)
    response = llm.chat(USER)
    assert response.message.content == "4"
    assert [b.content for b in response.message.blocks if isinstance(b, ThinkingBlock)] == [
        "2+2 is 4"
    ]
    streamed = list(llm.stream_chat(USER))
    assert "".join(r.additional_kwargs.get("thinking_delta", "") for r in streamed) == "2+2 is 4"
    assert "".join(r.delta or "" for r in streamed) == "4"
    completion = llm.complete("2+2?")
    assert completion.text == "4"
    assert completion.additional_kwargs["thinking"] == "2+2 is 4"


async def test_async_thinking_deltas() -> None:
    llm = stubbed(THINKING)
    stream = await llm.astream_chat(USER)
    deltas = [r.additional_kwargs.get("thinking_delta") async for r in stream]
    assert deltas[:2] == ["2+2 ", "is 4"]
    response = await llm.achat(USER)
    assert response.message.content == "4"
    assert [r.method for r in calls(llm)] == ["achat_stream", "achat_stream"]


def test_complete_uses_the_chat_template_unless_formatted() -> None:
    llm = stubbed(system_prompt="Be brief.")
    assert llm.complete("Hi").text == "Hello"
    request = calls(llm)[-1]
    assert request.method == "chat_stream"
    assert request.messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
    ]
    llm.complete("<|im_start|>user\nHi", formatted=True, max_tokens=4)
    request = calls(llm)[-1]
    assert (request.method, request.prompt, request.raw) == (
        "generate_stream",
        "<|im_start|>user\nHi",
        True,
    )
    assert request.options == {"num_predict": 4}


async def test_async_completion_paths() -> None:
    llm = stubbed()
    assert (await llm.acomplete("Hi")).text == "Hello"
    stream = await llm.astream_complete("Hi", formatted=True)
    assert [r.delta async for r in stream] == ["Hello", ""]
    assert [r.method for r in calls(llm)] == ["achat_stream", "agenerate_stream"]


# ---- callbacks and instrumentation --------------------------------------------------------


def test_stream_emits_instrumentation_events_and_callbacks(collector: Collector) -> None:
    debug = LlamaDebugHandler()
    llm = stubbed([TextDelta("a"), TextDelta("b"), FINAL])
    llm.callback_manager = CallbackManager([debug])
    responses = list(llm.stream_chat(USER))
    assert [r.delta for r in responses] == ["a", "b", ""]
    kinds = [type(e) for e in collector.events]
    assert kinds.count(LLMChatStartEvent) == 1
    assert kinds.count(LLMChatInProgressEvent) == 3
    assert kinds.count(LLMChatEndEvent) == 1
    end = next(e for e in collector.events if isinstance(e, LLMChatEndEvent))
    assert end.response is not None
    assert end.response.raw["usage"]["total_tokens"] == 6
    assert len(debug.get_event_pairs(CBEventType.LLM)) == 1


# ---- tools -------------------------------------------------------------------------


CALLS = [
    ToolCallDelta(0, "c1", "add", {"a": 1, "b": 2}),
    ToolCallDelta(1, "c2", "add", {"a": 3, "b": 4}),
    FINAL,
]


def test_chat_with_tools_arguments_and_parallel_calls() -> None:
    tool = FunctionTool.from_defaults(fn=add)
    history = [ChatMessage(role="system", content="Use tools.")]
    llm = stubbed(CALLS)
    response = llm.chat_with_tools(
        [tool], user_msg="1+2?", chat_history=history, tool_required=True
    )
    assert len(history) == 1  # the caller's history is not modified
    request = calls(llm)[-1]
    assert [m["role"] for m in request.messages or []] == ["system", "user"]
    assert request.tool_choice == "required"
    assert (request.tools or [])[0]["function"]["name"] == "add"
    assert request.parallel_tool_calls is False  # the engine stops after one call
    assert len(llm.get_tool_calls_from_response(response)) == 1  # parallel calls not allowed
    response = llm.chat_with_tools([tool], user_msg="1+2?", allow_parallel_tool_calls=True)
    assert calls(llm)[-1].tool_choice == "auto"
    assert calls(llm)[-1].parallel_tool_calls is True
    selections = llm.get_tool_calls_from_response(response)
    assert [(s.tool_id, s.tool_kwargs) for s in selections] == [
        ("c1", {"a": 1, "b": 2}),
        ("c2", {"a": 3, "b": 4}),
    ]
    llm.chat_with_tools([tool], user_msg="1+2?", tool_choice="add")
    assert calls(llm)[-1].tool_choice == "add"


def test_stream_chat_with_tools_and_predict_and_call() -> None:
    tool = FunctionTool.from_defaults(fn=add)
    llm = stubbed(CALLS[:1] + [FINAL])
    last = list(llm.stream_chat_with_tools([tool], user_msg="1+2?"))[-1]
    assert [b.tool_name for b in last.message.blocks if isinstance(b, ToolCallBlock)] == ["add"]
    assert llm.predict_and_call([tool], user_msg="1+2?").response == "3"


async def test_async_chat_with_tools() -> None:
    tool = FunctionTool.from_defaults(fn=add)
    llm = stubbed(CALLS)
    response = await llm.achat_with_tools([tool], user_msg="1+2?", tool_required=True)
    assert len(llm.get_tool_calls_from_response(response)) == 1
    assert (await llm.apredict_and_call([tool], user_msg="1+2?")).response == "3"


def test_no_tools_no_calls() -> None:
    llm = stubbed()
    response = llm.chat(USER, tools=[])
    assert response.message.additional_kwargs.get("tool_calls", []) == []
    assert llm.get_tool_calls_from_response(response, error_on_no_tool_call=False) == []


# ---- structured output -----------------------------------------------------------------


class Person(BaseModel):
    """A person."""

    name: str
    age: int


JSON = [TextDelta('{"name": "Ada",'), TextDelta(' "age": 36}'), FINAL]


def test_structured_predict_passes_the_schema_as_format(collector: Collector) -> None:
    llm = stubbed(JSON)
    person = llm.structured_predict(Person, PromptTemplate("Who? {text}"), text="Ada, 36")
    assert person == Person(name="Ada", age=36)
    request = calls(llm)[-1]
    assert request.format == Person.model_json_schema()
    assert request.messages == [{"role": "user", "content": "Who? Ada, 36"}]
    assert any(isinstance(e, LLMStructuredPredictEndEvent) for e in collector.events)
    response = llm.as_structured_llm(Person).chat(USER)
    assert response.raw == Person(name="Ada", age=36)


def test_structured_predict_llm_kwargs_and_errors() -> None:
    llm = stubbed(
        [TextDelta('{"name": "Ad'), FinalChunk("length", Usage(1, 1), FINAL.timings, "m")]
    )
    with pytest.raises(ValueError, match="num_predict"):
        llm.structured_predict(Person, PromptTemplate("x"), llm_kwargs={"num_predict": 3})
    assert calls(llm)[-1].options == {"num_predict": 3}


def test_stream_structured_predict() -> None:
    llm = stubbed(JSON)
    outputs = list(llm.stream_structured_predict(Person, PromptTemplate("x")))
    assert outputs[-1] == Person(name="Ada", age=36)
    assert outputs[0].name == "Ada"  # partial object while the JSON streams


async def test_async_structured_predict() -> None:
    llm = stubbed(JSON)
    assert await llm.astructured_predict(Person, PromptTemplate("x")) == Person(name="Ada", age=36)
    stream = await llm.astream_structured_predict(Person, PromptTemplate("x"))
    outputs = [o async for o in stream]
    assert outputs[-1] == Person(name="Ada", age=36)


# ---- real runs on the tiny model ---------------------------------------------------------


@pytest.fixture
def tiny_llm(tiny_gguf: Path) -> Iterator[LocalLLM]:
    engine = Engine()
    yield LocalLLM(model=str(tiny_gguf), temperature=0, seed=1, num_predict=8, engine=engine)
    engine.pool.close()


def test_tiny_model_every_path(tiny_llm: LocalLLM) -> None:
    chat = tiny_llm.chat(USER)
    assert chat.raw["usage"]["completion_tokens"] >= 1
    streamed = list(tiny_llm.stream_chat(USER))
    assert "".join(r.delta or "" for r in streamed) == streamed[-1].message.content
    assert streamed[-1].message.content == chat.message.content  # seeded, greedy
    assert tiny_llm.complete("Hi").text == chat.message.content
    assert "".join(r.delta or "" for r in tiny_llm.stream_complete("Hi")) == chat.message.content


async def test_tiny_model_async_paths(tiny_llm: LocalLLM) -> None:
    chat = await tiny_llm.achat(USER)
    stream = await tiny_llm.astream_chat(USER)
    deltas = [r.delta async for r in stream]
    assert "".join(d or "" for d in deltas) == chat.message.content
    assert (await tiny_llm.acomplete("Hi")).text == chat.message.content


def test_breaking_out_of_a_stream_frees_the_model(tiny_llm: LocalLLM) -> None:
    stream = tiny_llm.stream_chat(USER, num_predict=200)
    next(stream)
    stream.close()
    assert tiny_llm.engine is not None
    assert all(p.active_requests == 0 for p in tiny_llm.engine.ps())
    assert tiny_llm.chat(USER).message.content is not None  # not deadlocked


async def test_cancelling_achat_closes_the_engine_stream() -> None:
    engine = FakeEngine([" word" * 1000], chunk_delay=0.005)  # a slow, long answer
    llm = LocalLLM(model="stub", engine=engine)
    task = asyncio.create_task(llm.achat(USER))
    while engine.open_streams == 0:
        await asyncio.sleep(0.005)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(1000):  # the worker notices the close within a chunk
        if engine.open_streams == 0:
            break
        await asyncio.sleep(0.01)
    assert engine.open_streams == 0


def test_bad_option_is_reported(tiny_llm: LocalLLM) -> None:
    from local_llm_runtime import InvalidOptionError

    with pytest.raises(InvalidOptionError):
        tiny_llm.chat(USER, top_p=3.0)
