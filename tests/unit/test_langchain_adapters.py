"""LangChain adapters: LangChain's own unit suites, the pure converters, callbacks on a tiny model."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from langchain_core.callbacks import AsyncCallbackHandler, BaseCallbackHandler
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_tests.unit_tests import ChatModelUnitTests, EmbeddingsUnitTests

from local_llm_integrations import ChatLocal
from local_llm_integrations.langchain import LocalEmbeddings, LocalLLM
from local_llm_integrations.langchain._convert import message_chunk, to_runtime_messages
from local_llm_runtime.types import (
    FinalChunk,
    ReasoningDelta,
    TextDelta,
    Timings,
    ToolCallDelta,
    Usage,
)


class TestChatLocalUnit(ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[ChatLocal]:
        return ChatLocal

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"model": "qwen2.5-coder:0.5b"}

    @property
    def standard_chat_model_params(self) -> dict[str, Any]:
        # The suite passes api_key="test" for hosted models; a local model has no key,
        # and ChatLocal refuses arguments it would otherwise ignore.
        params = dict(super().standard_chat_model_params)
        params.pop("api_key", None)
        return params

    @property
    def has_tool_choice(self) -> bool:
        return True

    @property
    def supports_json_mode(self) -> bool:
        return True

    @property
    def returns_usage_metadata(self) -> bool:
        return True

    @property
    def model_override_value(self) -> str:
        return "qwen2.5:0.5b"


class TestLocalEmbeddingsUnit(EmbeddingsUnitTests):
    @property
    def embeddings_class(self) -> type[LocalEmbeddings]:
        return LocalEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return {"model": "nomic-embed-text"}


def test_construction_does_no_io(isolated_env: dict[str, Path]) -> None:
    ChatLocal(model="qwen2.5:72b", temperature=0.1, num_ctx=8192)
    LocalLLM(model="llama3.1:70b")
    LocalEmbeddings(model="nomic-embed-text")
    assert not isolated_env["home"].exists()
    assert not isolated_env["hf_home"].exists()


def test_max_tokens_is_num_predict() -> None:
    llm = ChatLocal(model="m", max_tokens=12)
    assert llm.num_predict == 12
    assert llm.engine_options() == {"num_predict": 12}
    assert llm.engine_options({"max_tokens": 5, "temperature": 0.2}) == {
        "num_predict": 5,
        "temperature": 0.2,
    }


def test_messages_convert_to_runtime_dicts() -> None:
    messages = [
        SystemMessage("be brief"),
        HumanMessage(
            content=[{"type": "text", "text": "hi "}, {"type": "text", "text": "there"}], name="bob"
        ),
        AIMessage(
            content="",
            tool_calls=[{"name": "add", "args": {"a": 1}, "id": "c1", "type": "tool_call"}],
        ),
        ToolMessage(content="2", tool_call_id="c1", name="add"),
    ]
    assert to_runtime_messages(messages) == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi there", "name": "bob"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "add", "arguments": {"a": 1}}}]},
        {"role": "tool", "content": "2", "tool_call_id": "c1", "name": "add"},
    ]  # fmt: skip
    with pytest.raises(ValueError, match="image"):
        to_runtime_messages([HumanMessage(content=[{"type": "image", "url": "x"}])])


def test_chunks_convert_to_message_chunks() -> None:
    assert message_chunk(TextDelta("a")).content == "a"
    reasoning = message_chunk(ReasoningDelta("hmm"))
    assert reasoning.additional_kwargs == {"reasoning_content": "hmm"}
    call = message_chunk(ToolCallDelta(0, "id1", "add", {"a": 1}))
    assert call.tool_call_chunks[0]["args"] == '{"a": 1}'
    final = message_chunk(FinalChunk("stop", Usage(3, 4), Timings(0, 0, 0.1, 0.2, 3, 5), "m"))
    assert final.usage_metadata == {"input_tokens": 3, "output_tokens": 4, "total_tokens": 7}
    assert final.response_metadata["model_name"] == "m"
    assert final.response_metadata["finish_reason"] == "stop"
    merged = call + final
    assert merged.tool_calls == [
        {"name": "add", "args": {"a": 1}, "id": "id1", "type": "tool_call"}
    ]


def test_tool_choice_values() -> None:
    def add(a: int, b: int) -> int:
        """Add."""
        return a + b

    llm = ChatLocal(model="m")
    for choice, expected in [("any", "required"), ("required", "required"), ("add", "add"),
                             (True, "add"), ("none", "none"), (None, None), ("auto", None),
                             ({"type": "function", "function": {"name": "add"}}, "add")]:  # fmt: skip
        bound = llm.bind_tools([add], tool_choice=choice)
        assert bound.kwargs["tool_choice"] == expected  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="not one of the tools"):
        llm.bind_tools([add], tool_choice="multiply")


class Counter(BaseCallbackHandler):
    def __init__(self) -> None:
        self.tokens: list[str] = []

    def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
        self.tokens.append(token)


class AsyncCounter(AsyncCallbackHandler):
    def __init__(self) -> None:
        self.tokens: list[str] = []

    async def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
        self.tokens.append(token)


def test_streaming_callbacks_fire_for_every_token(tiny_gguf: Path) -> None:
    llm = ChatLocal(model=str(tiny_gguf), temperature=0, max_tokens=10, seed=1)
    sync_counter = Counter()
    text = "".join(str(c.content) for c in llm.stream("hi", config={"callbacks": [sync_counter]}))
    assert "".join(sync_counter.tokens) == text
    assert len([t for t in sync_counter.tokens if t]) >= 5

    async_counter = AsyncCounter()

    async def run() -> str:
        parts = [
            str(c.content) async for c in llm.astream("hi", config={"callbacks": [async_counter]})
        ]
        return "".join(parts)

    assert asyncio.run(run()) == text
    assert "".join(async_counter.tokens) == text
    invoke_counter = Counter()
    message = llm.invoke("hi", config={"callbacks": [invoke_counter]})
    assert message.content == text
    assert message.usage_metadata is not None and message.usage_metadata["output_tokens"] == 10


def test_unknown_call_arguments_are_rejected(tiny_gguf: Path) -> None:
    with pytest.raises(TypeError, match=r"'temprature' \(did you mean 'temperature'\?\)"):
        ChatLocal(model=str(tiny_gguf)).invoke("hi", temprature=0.5)


def test_llm_and_embeddings_on_tiny_model(tiny_gguf: Path) -> None:
    llm = LocalLLM(model=str(tiny_gguf), temperature=0, max_tokens=6, seed=2)
    text = llm.invoke("hello")
    assert text == "".join(llm.stream("hello"))
    result = llm.generate(["a", "b"])
    assert len(result.generations) == 2
    assert result.generations[0][0].generation_info["completion_tokens"] == 6  # type: ignore[index]
    emb = LocalEmbeddings(model=str(tiny_gguf), batch_size=2)
    vectors = emb.embed_documents(["one", "two", "three"])
    assert len(vectors) == 3 and len(emb.embed_query("x")) == 64
    async_vectors = asyncio.run(emb.aembed_documents(["one", "two", "three"]))
    for got, want in zip(async_vectors, vectors, strict=True):
        assert got == pytest.approx(want, abs=1e-5)


def test_chatlocal_import_does_not_load_llama_index() -> None:
    code = (
        "import sys; from local_llm_integrations import ChatLocal; "
        "print(any(m.startswith('llama_index') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_parallel_tool_calls_false_allows_one_call(tiny_gguf: Path) -> None:
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    def mul(a: int, b: int) -> int:
        """Multiply two integers."""
        return a * b

    llm = ChatLocal(model=str(tiny_gguf), temperature=1.0, max_tokens=400)
    single = llm.bind_tools([add, mul], tool_choice="any", parallel_tool_calls=False)
    assert single.kwargs["parallel_tool_calls"] is False  # type: ignore[attr-defined]
    counts = []
    for seed in range(6):
        message = single.invoke("1+2 and 3*4?", seed=seed)
        assert len(message.tool_calls) == 1, message  # the grammar admits one; generation stops
        assert message.response_metadata["finish_reason"] == "tool_calls"
        parallel = llm.bind_tools([add, mul], tool_choice="any").invoke("1+2 and 3*4?", seed=seed)
        counts.append(len(parallel.tool_calls))
    # The same seeds give several calls when they are allowed (so the check above bites).
    assert min(counts) >= 1 and max(counts) >= 2, counts


def test_embedding_prefixes(tiny_gguf: Path) -> None:
    from local_llm_runtime.llama.engine import default_engine

    emb = LocalEmbeddings(model=str(tiny_gguf), query_prefix="q: ", document_prefix="doc: ")
    engine = default_engine()
    assert emb.embed_query("x") == engine.embed(str(tiny_gguf), ["q: x"])[0]
    assert emb.embed_documents(["y"]) == engine.embed(str(tiny_gguf), ["doc: y"])
    assert asyncio.run(emb.aembed_query("x")) == pytest.approx(emb.embed_query("x"), abs=1e-5)
