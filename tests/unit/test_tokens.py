"""Token counting with the model's own tokenizer and chat template, without loading weights."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import llama_cpp
import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, trim_messages

from local_llm_integrations import ChatLocal
from local_llm_integrations.langchain import LocalLLM as LangChainLLM
from local_llm_integrations.llama_index import LocalLLM as LlamaIndexLLM
from local_llm_runtime import InvalidModelFileError
from local_llm_runtime.llama.engine import Engine

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "hello world, the world is a hello"},
]


@pytest.fixture
def engine() -> Iterator[Engine]:
    eng = Engine()
    yield eng
    eng.pool.close()


def test_tokenize_uses_the_vocabulary_only(engine: Engine, tiny_gguf: Path) -> None:
    reference = llama_cpp.Llama(str(tiny_gguf), verbose=False)
    try:
        want = reference.tokenize(b"hello world", add_bos=False)
    finally:
        reference.close()
    assert engine.tokenize(str(tiny_gguf), "hello world") == want
    assert engine.ps() == []  # no generation instance was loaded for it


def test_count_matches_the_prompt_tokens_of_a_request(engine: Engine, tiny_gguf: Path) -> None:
    counted = engine.count_chat_tokens(str(tiny_gguf), MESSAGES)
    result = engine.chat(str(tiny_gguf), MESSAGES, options={"num_predict": 1})
    assert counted == result.usage.prompt_tokens > 10


def test_each_model_gets_its_own_template(
    engine: Engine, tiny_gguf_factory: Callable[..., Path]
) -> None:
    plain = tiny_gguf_factory(
        chat_template="{% for m in messages %}{{ m['content'] }}\n{% endfor %}"
    )
    chatml = tiny_gguf_factory()
    for path in (plain, chatml, plain):  # load, unload, load again: no template mix-up
        result = engine.chat(str(path), MESSAGES, options={"num_predict": 1}, keep_alive=0)
        assert result.usage.prompt_tokens == engine.count_chat_tokens(str(path), MESSAGES)
    assert engine.count_chat_tokens(str(plain), MESSAGES) < engine.count_chat_tokens(
        str(chatml), MESSAGES
    )


def test_a_file_that_is_not_a_model_is_a_typed_error(engine: Engine, tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(InvalidModelFileError, match="not a valid GGUF"):
        engine.tokenize(str(bogus), "hi")


def test_langchain_counts_with_the_model_tokenizer(tiny_gguf: Path) -> None:
    llm = ChatLocal(model=str(tiny_gguf), num_predict=1)
    ids = llm.get_token_ids("hello world")
    assert ids and llm.get_num_tokens("hello world") == len(ids)
    assert LangChainLLM(model=str(tiny_gguf)).get_token_ids("hello world") == ids
    messages = [SystemMessage("You are terse."), HumanMessage("hello world, the world is a hello")]
    reply = llm.invoke(messages)
    assert reply.usage_metadata is not None
    assert llm.get_num_tokens_from_messages(messages) == reply.usage_metadata["input_tokens"]


def test_trim_messages_with_the_model_as_counter(tiny_gguf: Path) -> None:
    llm = ChatLocal(model=str(tiny_gguf))
    history = [SystemMessage("You are terse.")]
    for i in range(10):
        history += [HumanMessage(f"hello {i} " * 5), AIMessage(f"world {i} " * 5)]
    budget = llm.get_num_tokens_from_messages(history) // 3
    trimmed = trim_messages(
        history, max_tokens=budget, token_counter=llm, strategy="last", include_system=True
    )
    assert isinstance(trimmed[0], SystemMessage) and len(trimmed) < len(history)
    assert llm.get_num_tokens_from_messages(trimmed) <= budget


def test_llama_index_tokenize(tiny_gguf: Path) -> None:
    llm = LlamaIndexLLM(model=str(tiny_gguf))
    assert llm.tokenize("hello world") == ChatLocal(model=str(tiny_gguf)).get_token_ids(
        "hello world"
    )
