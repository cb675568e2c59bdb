"""Log-probabilities in LangChain and LlamaIndex, in the shapes their OpenAI classes use."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from llama_index.core.base.llms.types import ChatMessage, LogProb

from local_llm_integrations import ChatLocal
from local_llm_integrations.langchain import LocalLLM as LangChainLLM
from local_llm_integrations.llama_index import LocalLLM as IndexLLM
from local_llm_runtime.errors import InvalidOptionError
from local_llm_runtime.logprobs import token_logprob_object
from local_llm_runtime.testing import FakeEngine, FakeResponse, fake_logprobs, fake_tokens

ANSWER = "Hello, world"
KEYS = {"token", "logprob", "bytes", "top_logprobs"}


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine(responses=[ANSWER], cycle=True)


def _expected(k: int) -> list[dict[str, Any]]:
    return [token_logprob_object(item) for item in fake_logprobs(ANSWER, k)]


class _Tokens(BaseCallbackHandler):
    def __init__(self) -> None:
        self.logprobs: list[Any] = []

    def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
        chunk = kwargs.get("chunk")  # the generation chunk, as ChatOpenAI's callbacks get it
        self.logprobs.append((chunk.generation_info or {}).get("logprobs") if chunk else None)


def test_chat_local_response_metadata_has_chat_openais_shape(engine: FakeEngine) -> None:
    llm = ChatLocal(model="m", engine=engine, logprobs=True, top_logprobs=2)
    message = llm.invoke("hi")
    logprobs = message.response_metadata["logprobs"]
    assert logprobs["content"] == _expected(2)
    assert logprobs["refusal"] is None
    first = logprobs["content"][0]
    assert set(first) == KEYS and first["token"] == "Hello" and first["bytes"] == list(b"Hello")
    assert [set(t) for t in first["top_logprobs"]] == [{"token", "logprob", "bytes"}] * 2
    assert engine.last_request.options == {"logprobs": True, "top_logprobs": 2}
    assert asyncio.run(llm.ainvoke("hi")).response_metadata["logprobs"] == logprobs

    plain = ChatLocal(model="m", engine=engine).invoke("hi")
    assert "logprobs" not in plain.response_metadata
    per_call = ChatLocal(model="m", engine=engine).invoke("hi", logprobs=True)
    assert per_call.response_metadata["logprobs"]["content"] == _expected(0)
    with pytest.raises(InvalidOptionError, match="needs logprobs=true"):
        ChatLocal(model="m", engine=engine, top_logprobs=2)


def test_chat_local_streamed_chunks_carry_their_tokens(engine: FakeEngine) -> None:
    handler = _Tokens()
    llm = ChatLocal(model="m", engine=engine, logprobs=True, top_logprobs=1)
    chunks = list(llm.stream("hi", config={"callbacks": [handler]}))
    texts = [c for c in chunks if c.content]
    assert len(texts) == len(fake_tokens(ANSWER))
    for chunk, expected in zip(texts, _expected(1), strict=True):
        assert chunk.response_metadata["logprobs"]["content"] == [expected]
    total = chunks[0]
    for chunk in chunks[1:]:
        total += chunk
    assert total.response_metadata["logprobs"]["content"] == _expected(1)
    assert [p["content"] for p in handler.logprobs if p and p["content"]] == [
        [e] for e in _expected(1)
    ]


def test_langchain_completion_llm_has_the_legacy_completion_shape(engine: FakeEngine) -> None:
    llm = LangChainLLM(model="m", engine=engine, logprobs=True, top_logprobs=2)
    generation = llm.generate(["hi"]).generations[0][0]
    info = (generation.generation_info or {})["logprobs"]
    items = fake_logprobs(ANSWER, 2)
    assert info["tokens"] == fake_tokens(ANSWER) == ["Hello", ",", " world"]
    assert info["token_logprobs"] == [t.logprob for t in items]
    assert info["text_offset"] == [0, 5, 6]
    assert info["top_logprobs"][0] == {
        "Hello": items[0].logprob,
        "<alt1>": items[0].top_logprobs[1].logprob,
    }
    streamed = list(llm.stream("hi"))
    assert "".join(streamed) == ANSWER
    plain = LangChainLLM(model="m", engine=engine).generate(["hi"]).generations[0][0]
    assert "logprobs" not in (plain.generation_info or {})


def test_llama_index_chat_and_completion_logprobs(engine: FakeEngine) -> None:
    llm = IndexLLM(model="m", engine=engine, logprobs=True, top_logprobs=3)
    items = fake_logprobs(ANSWER, 3)
    expected = [
        [LogProb(token=t.token, logprob=t.logprob, bytes=list(t.bytes))]
        + [
            LogProb(token=a.token, logprob=a.logprob, bytes=list(a.bytes))
            for a in t.top_logprobs[1:]  # the generated token is first, not repeated
        ]
        for t in items
    ]
    messages = [ChatMessage(role="user", content="hi")]
    response = llm.chat(messages)
    assert response.logprobs == expected
    assert llm.complete("hi").logprobs == expected
    assert asyncio.run(llm.achat(messages)).logprobs == expected
    streamed = list(llm.stream_chat(messages))
    assert streamed[-1].logprobs == expected
    assert [len(r.logprobs or []) for r in streamed if r.delta] == [1, 2, 3]
    assert list(llm.stream_complete("hi"))[-1].logprobs == expected
    assert IndexLLM(model="m", engine=engine).chat(messages).logprobs is None


def test_reasoning_tokens_stay_out_of_the_answers_logprobs() -> None:
    engine = FakeEngine(responses=[FakeResponse(text="ok", reasoning="hmm")], cycle=True)
    llm = ChatLocal(model="m", engine=engine, logprobs=True)
    content = llm.invoke("hi").response_metadata["logprobs"]["content"]
    assert [t["token"] for t in content] == ["ok"]
    index = IndexLLM(model="m", engine=engine, logprobs=True)
    logprobs = index.chat([ChatMessage(role="user", content="hi")]).logprobs
    assert [[p.token for p in position] for position in logprobs or []] == [["ok"]]
