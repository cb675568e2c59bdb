"""No input reaches llama.cpp that it cannot take; no argument is silently dropped.

Real engine on tiny GGUF models: every bad input is a typed error raised before
any load, every accepted edge value runs without crashing llama.cpp, and every
text gets an embedding.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from local_llm_runtime import (
    ContextLengthExceededError,
    InvalidOptionError,
    UnknownOptionError,
)
from local_llm_runtime.llama.embedding import embedding_tokens
from local_llm_runtime.llama.engine import Engine
from local_llm_runtime.options import OPTIONS, validate_options

GREEDY = {"temperature": 0.0, "num_predict": 3}
HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture
def engine() -> Iterator[Engine]:
    eng = Engine()
    yield eng
    eng.pool.close()


@pytest.fixture
def no_bos(tiny_gguf_factory: Callable[..., Path]) -> str:
    """Like Qwen: adds no BOS token, so ``""`` has zero tokens."""
    return str(tiny_gguf_factory(add_bos=False))


# ---- options: every bad value is refused, naming the option and its range -----------

BAD_OPTIONS: list[tuple[str, Any, str]] = [
    *[
        (name, value, "finite")
        for name, spec in OPTIONS.items()
        if spec.kind is float and name != "keep_alive"
        for value in (math.nan, math.inf, -math.inf)
    ],
    ("temperature", -0.1, "at least 0.0"),
    ("top_p", 1.5, "between 0.0 and 1.0"),
    ("min_p", -0.5, "between 0.0 and 1.0"),
    ("typical_p", 2, "between 0.0 and 1.0"),
    ("repeat_penalty", -1, "at least 0.0"),
    ("top_k", -1, "between 0 and 2147483647"),
    ("top_k", 2**40, "between 0 and 2147483647"),
    ("repeat_last_n", -2, "between -1 and 2147483647"),
    ("repeat_last_n", 2**40, "between -1 and 2147483647"),
    ("seed", -2, "between -1 and 4294967294"),
    ("seed", 2**32, "between -1 and 4294967294"),
    ("seed", 2**64, "between -1 and 4294967294"),
    ("num_ctx", 0, "between 1 and 2147483647"),
    ("num_ctx", 2**40, "between 1 and 2147483647"),
    ("num_batch", 0, "between 1 and 2147483647"),
    ("num_thread", 0, "between 1 and 512"),
    ("num_thread", 2**20, "between 1 and 512"),  # crashed the process (SIGSEGV) before
    ("num_gpu", -2, "between -1 and 2147483647"),
    ("num_predict", -3, "between -2 and 2147483647"),
    ("num_predict", 1.5, "int"),
    ("top_k", "many", "int"),
    ("temperature", True, "float"),
    ("stop", "", "empty"),
    ("stop", ["ok", ""], "empty"),
    ("stop", 5, "list of strings"),
    ("keep_alive", math.nan, "finite"),
    ("keep_alive", "inf", "finite"),
    ("top_logprobs", 21, "between 0 and 20"),  # OpenAI's and Ollama's limit
    ("top_logprobs", -1, "between 0 and 20"),
    ("top_logprobs", 3, "needs logprobs=true"),  # as OpenAI: alternatives need logprobs
    ("logprobs", 1, "true or false"),
    ("logprobs", "maybe", "true or false"),
]


@pytest.mark.parametrize(("name", "value", "allowed"), BAD_OPTIONS)
def test_bad_option_values_are_refused_by_name_and_range(
    name: str, value: Any, allowed: str
) -> None:
    with pytest.raises(InvalidOptionError, match=name) as caught:
        validate_options({name: value})
    assert allowed in str(caught.value)


def test_every_float_option_is_covered_by_the_nan_table() -> None:
    floats = {n for n, s in OPTIONS.items() if s.kind is float}
    assert floats == {n for n, v, _ in BAD_OPTIONS if isinstance(v, float) and math.isnan(v)}


def test_bad_options_fail_before_any_load(engine: Engine, tiny_gguf: Path) -> None:
    for name, value, _ in BAD_OPTIONS[:6] + [("num_thread", 2**20, "")]:
        with pytest.raises(InvalidOptionError, match=name):
            engine.chat(str(tiny_gguf), HELLO, options={**GREEDY, name: value})
    with pytest.raises(UnknownOptionError, match=r"(?i)did you mean 'temperature'"):
        engine.chat(str(tiny_gguf), HELLO, options={"temprature": 0.1})
    assert engine.ps() == []


EDGE_OPTIONS: list[dict[str, Any]] = [
    {"top_k": 2**31 - 1, "temperature": 1.0},  # > vocabulary: llama.cpp keeps every token
    {"top_k": 0, "temperature": 1.0},
    {"top_p": 0.0, "temperature": 1.0},
    {"min_p": 1.0, "temperature": 1.0},
    {"temperature": 1e6},
    {"repeat_last_n": 2**31 - 1},  # clamped to the context (llama.cpp allocates the window)
    {"repeat_last_n": -1},
    {"repeat_last_n": 0},
    {"repeat_penalty": 0.0},
    {"presence_penalty": -1e6, "frequency_penalty": 1e6},
    {"seed": -1},  # Ollama: a random seed
    {"seed": 0},
    {"seed": 2**32 - 2},
    {"num_predict": 0},  # Ollama: no limit (the context bounds it)
    {"num_predict": -2},
    {"num_predict": 2**31 - 1},
    {"num_batch": 2**31 - 1},
    {"num_batch": 1},
    {"num_gpu": 2**31 - 1},
    {"num_ctx": 30},
    {"num_thread": 512},
    {"stop": ["\x00", "a" * 1000]},
]


@pytest.mark.parametrize("options", EDGE_OPTIONS, ids=lambda o: ",".join(map(str, o.items())))
def test_accepted_edge_values_run_on_llama_cpp(
    engine: Engine, tiny_gguf: Path, options: dict[str, Any]
) -> None:
    result = engine.chat(
        str(tiny_gguf), HELLO, options={"num_predict": 3, "num_ctx": 48, **options}
    )
    assert result.finish_reason in ("stop", "length")
    assert 0 < result.usage.completion_tokens <= 48 - result.usage.prompt_tokens


def test_num_predict_zero_means_no_limit_as_in_ollama(engine: Engine, tiny_gguf: Path) -> None:
    opts = {"temperature": 0.0, "num_ctx": 64}
    zero = engine.chat(str(tiny_gguf), HELLO, options={**opts, "num_predict": 0})
    unlimited = engine.chat(str(tiny_gguf), HELLO, options={**opts, "num_predict": -1})
    assert zero.text == unlimited.text
    assert zero.usage.completion_tokens == unlimited.usage.completion_tokens > 3


# ---- messages: malformed requests are typed errors before load --------------------

BAD_MESSAGES: list[tuple[Any, str]] = [
    ([], "messages is empty"),
    ((), "messages is empty"),
    ("hello", "not a single str"),
    ({"role": "user", "content": "hi"}, "not a single dict"),
    (None, "not NoneType"),
    (["hello"], r"messages\[0\] must be a mapping"),
    ([{"content": "hi"}], r"messages\[0\] has no role"),
    ([{"role": "", "content": "hi"}], r"messages\[0\] has no role"),
    ([{"role": 3, "content": "hi"}], r"messages\[0\] has no role"),
    ([*HELLO, {"role": "user", "content": 5}], r"messages\[1\]\.content must be a string"),
    ([{"role": "user", "content": {"a": 1}}], r"messages\[0\]\.content must be a string"),
    (
        [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
        r"content\[0\] is a 'image_url' part",
    ),
    ([{"role": "user", "content": [{"type": "text", "text": 3}]}], "not a string"),
]


@pytest.mark.parametrize(("messages", "error"), BAD_MESSAGES)
def test_malformed_messages_fail_before_load_on_every_entry_point(
    engine: Engine, tiny_gguf: Path, messages: Any, error: str
) -> None:
    model = str(tiny_gguf)
    calls: list[Callable[[], object]] = [
        lambda: engine.chat(model, messages),
        lambda: engine.chat_stream(model, messages),
        lambda: asyncio.run(engine.achat(model, messages)),
        lambda: engine.count_chat_tokens(model, messages),
    ]
    for call in calls:
        with pytest.raises(InvalidOptionError, match=error):
            call()
    assert engine.ps() == []  # nothing was loaded


def test_valid_message_shapes_are_accepted(engine: Engine, tiny_gguf: Path) -> None:
    model = str(tiny_gguf)
    for messages in (
        [{"role": "user", "content": None}, *HELLO],
        [{"role": "user", "content": ["hel", {"type": "text", "text": "lo"}]}],
        [{"role": "developer", "content": "be brief"}, *HELLO],  # the template decides roles
    ):
        assert engine.chat(model, messages, options=GREEDY).finish_reason in ("stop", "length")
    parts = [{"role": "user", "content": ["hel", {"type": "text", "text": "lo"}]}]
    assert engine.count_chat_tokens(model, parts) == engine.count_chat_tokens(model, HELLO)


def test_adapters_refuse_an_empty_conversation_before_load(tiny_gguf: Path) -> None:
    from llama_index.core.base.llms.types import ChatMessage

    from local_llm_integrations import ChatLocal
    from local_llm_integrations.llama_index import LocalLLM as IndexLLM

    with pytest.raises(InvalidOptionError, match="messages is empty"):
        ChatLocal(model=str(tiny_gguf)).invoke([])
    with pytest.raises(InvalidOptionError, match="messages is empty"):
        ChatLocal(model=str(tiny_gguf)).get_num_tokens_from_messages([])
    with pytest.raises(InvalidOptionError, match="messages is empty"):
        IndexLLM(model=str(tiny_gguf)).chat([])
    with pytest.raises(InvalidOptionError, match="messages is empty"):
        asyncio.run(IndexLLM(model=str(tiny_gguf)).achat(list[ChatMessage]()))


# ---- prompts with no tokens; templates that leave no room --------------------------


def test_prompts_with_zero_tokens_are_typed_errors(
    engine: Engine, no_bos: str, tiny_gguf_factory: Callable[..., Path]
) -> None:
    with pytest.raises(InvalidOptionError, match="0 tokens"):
        engine.generate(no_bos, "", raw=True, options=GREEDY)
    renders_nothing = str(tiny_gguf_factory(add_bos=False, chat_template="{{ '' }}"))
    with pytest.raises(InvalidOptionError, match="0 tokens"):
        engine.chat(renders_nothing, HELLO, options=GREEDY)
    with pytest.raises(InvalidOptionError, match="prompt must be a string"):
        engine.generate(no_bos, None, raw=True)  # type: ignore[arg-type]
    # the model still serves requests
    assert engine.generate(no_bos, "", options=GREEDY).finish_reason in ("stop", "length")


def test_context_smaller_than_the_template_names_both_numbers(
    engine: Engine, tiny_gguf: Path
) -> None:
    fixed = engine.count_chat_tokens(str(tiny_gguf), [{"role": "user", "content": ""}])
    with pytest.raises(ContextLengthExceededError) as caught:
        engine.chat(str(tiny_gguf), [{"role": "user", "content": ""}], options={"num_ctx": 4})
    assert caught.value.prompt_tokens == fixed
    assert caught.value.num_ctx == 4
    assert f"{fixed} tokens" in str(caught.value) and "context window is 4" in str(caught.value)


# ---- embeddings: every text gets one vector --------------------------------------


def _close(a: list[float], b: list[float]) -> bool:
    return bool(np.allclose(a, b, atol=1e-5))


@pytest.mark.parametrize("add_bos", [False, True])
def test_every_text_gets_one_vector(
    engine: Engine, tiny_gguf_factory: Callable[..., Path], add_bos: bool
) -> None:
    model = str(tiny_gguf_factory(add_bos=add_bos))
    texts = ["a", "", "b", "", "hello world"]
    batch = engine.embed(model, texts)
    alone = [engine.embed(model, [t])[0] for t in texts]
    assert len(batch) == len(texts)
    assert all(len(v) == 64 and all(math.isfinite(x) for x in v) for v in batch)
    assert all(_close(x, y) for x, y in zip(batch, alone, strict=True))
    assert _close(batch[1], batch[3])  # deterministic, wherever it sits in the batch
    assert _close(engine.embed(model, [""])[0], engine.embed(model, [""])[0])
    assert not _close(batch[1], batch[0])


def test_empty_text_is_embedded_as_the_bos_token(
    engine: Engine, tiny_gguf_factory: Callable[..., Path]
) -> None:
    # Same weights; one model adds BOS (its "" is [BOS]), the other adds nothing.
    with_bos = str(tiny_gguf_factory(add_bos=True))
    without = str(tiny_gguf_factory(add_bos=False))
    assert _close(engine.embed(without, [""])[0], engine.embed(with_bos, [""])[0])


def test_a_text_longer_than_the_context_is_truncated(engine: Engine, tiny_gguf: Path) -> None:
    model = str(tiny_gguf)
    long = "hello world " * 200
    (vector,) = engine.embed(model, [long], options={"num_ctx": 16})
    assert len(vector) == 64
    (entry,) = [e for e in engine.pool._entries.values() if e.options.embedding]
    full = entry.llm.tokenize(long.encode(), add_bos=True, special=False)
    assert embedding_tokens(entry.llm, long, 16) == full[:16]
    same_head = engine.embed(model, [long + "and more"], options={"num_ctx": 16})[0]
    assert _close(vector, same_head)  # only the first 16 tokens count
    other = engine.embed(model, ["world " + long], options={"num_ctx": 16})[0]
    assert not _close(vector, other)


def test_embedding_inputs_are_checked(engine: Engine, tiny_gguf: Path) -> None:
    with pytest.raises(InvalidOptionError, match="not one string"):
        engine.embed(str(tiny_gguf), "hello")  # type: ignore[arg-type]
    with pytest.raises(InvalidOptionError, match=r"texts\[1\] must be a string"):
        engine.embed(str(tiny_gguf), ["a", None])  # type: ignore[list-item]
    assert engine.embed(str(tiny_gguf), []) == []
    assert engine.ps() == []


def test_langchain_and_llama_index_embed_empty_text(no_bos: str) -> None:
    from local_llm_integrations.langchain import LocalEmbeddings
    from local_llm_integrations.llama_index import LocalEmbedding

    lc = LocalEmbeddings(model=no_bos, query_prefix="", document_prefix="")
    query = lc.embed_query("")
    docs = lc.embed_documents(["a", "", "b"])
    assert _close(query, docs[1])
    assert [len(v) for v in docs] == [64, 64, 64]
    li = LocalEmbedding(model=no_bos, query_instruction="", text_instruction="")
    assert _close(li.get_query_embedding(""), query)
    assert _close(li.get_text_embedding_batch(["a", "", "b"])[1], query)


# ---- unknown or misspelt arguments are never dropped --------------------------------


def _adapters() -> dict[str, Callable[..., object]]:
    from local_llm_integrations import ChatLocal
    from local_llm_integrations.langchain import LocalEmbeddings, LocalLLM
    from local_llm_integrations.llama_index import LocalEmbedding
    from local_llm_integrations.llama_index import LocalLLM as IndexLLM

    return {
        "ChatLocal": ChatLocal,
        "LocalLLM": LocalLLM,
        "LocalEmbeddings": LocalEmbeddings,
        "IndexLLM": IndexLLM,
        "LocalEmbedding": LocalEmbedding,
    }


MISSPELT: list[tuple[str, dict[str, Any], str | None]] = [
    ("ChatLocal", {"temprature": 0.3}, "temperature"),
    ("ChatLocal", {"top-p": 0.3}, "top_p"),
    ("ChatLocal", {"max_token": 5}, "max_tokens"),
    ("ChatLocal", {"numctx": 512}, "num_ctx"),
    ("ChatLocal", {"Temperature": 0.3}, "temperature"),
    ("ChatLocal", {"api_base": "http://x"}, "base_url"),  # another library's name first
    ("ChatLocal", {"openai_api_key": "k"}, "api_key"),
    ("IndexLLM", {"api_base": "http://x"}, "base_url"),
    ("ChatLocal", {"frobnicate": 1}, None),
    ("LocalLLM", {"temprature": 0.3}, "temperature"),
    ("LocalLLM", {"systen": "be brief"}, "system"),
    ("LocalEmbeddings", {"dimension": 64}, "dimensions"),
    ("LocalEmbeddings", {"normalise": False}, "normalize"),
    ("LocalEmbeddings", {"batchsize": 8}, "batch_size"),
    ("IndexLLM", {"temprature": 0.3}, "temperature"),
    ("IndexLLM", {"context_windw": 512}, "context_window"),
    ("IndexLLM", {"num_predit": 5}, "num_predict"),
    ("LocalEmbedding", {"embed_batchsize": 8}, "embed_batch_size"),
    ("LocalEmbedding", {"dimension": 64}, "dimensions"),
    ("LocalEmbedding", {"truncation": False}, "truncate"),
]


@pytest.mark.parametrize(("adapter", "kwargs", "suggestion"), MISSPELT)
def test_unknown_constructor_arguments_are_refused_with_the_closest_name(
    adapter: str, kwargs: dict[str, Any], suggestion: str | None
) -> None:
    cls = _adapters()[adapter]
    with pytest.raises(UnknownOptionError) as caught:
        cls(model="qwen2.5:0.5b", **kwargs)
    message = str(caught.value)
    (name,) = kwargs
    assert repr(name) in message
    if suggestion is None:
        assert "did you mean" not in message
    else:
        assert f"did you mean {suggestion!r}?" in message
    assert isinstance(caught.value, TypeError) and isinstance(caught.value, ValueError)


def test_known_arguments_and_aliases_still_construct() -> None:
    adapters = _adapters()
    adapters["ChatLocal"](model="m", max_tokens=5, streaming=True, tags=["t"], metadata={})
    adapters["LocalLLM"](model="m", num_predict=5, raw=True, system="s")
    adapters["LocalEmbeddings"](model="m", batch_size=4, num_ctx=128)
    index_llm = adapters["IndexLLM"](model="m", max_tokens=5, context_window=256, thinking=False)
    adapters["LocalEmbedding"](model_name="m", embed_batch_size=4)
    assert index_llm.num_ctx == 256  # type: ignore[attr-defined]


def test_option_values_are_checked_at_construction() -> None:
    for name, cls in _adapters().items():
        field = "num_thread"
        # a typed InvalidOptionError, or pydantic's ValidationError for a field bound
        with pytest.raises(ValueError, match=field):
            cls(model="m", **{field: 10_000})
        if name not in ("LocalEmbeddings", "LocalEmbedding"):
            with pytest.raises(ValueError, match="temperature"):
                cls(model="m", temperature=math.nan)


def test_serialisation_and_copies_still_work() -> None:
    from langchain_core.load import dumpd

    adapters = _adapters()
    chat = adapters["ChatLocal"](model="m", temperature=0.3)
    assert dumpd(chat)["id"][-1] == "ChatLocal"
    assert chat.model_copy(update={"temperature": 0.1}).temperature == 0.1  # type: ignore[attr-defined]
    index_llm = adapters["IndexLLM"](model="m", temperature=0.2, max_tokens=4)
    again = type(index_llm).from_dict(index_llm.to_dict())  # type: ignore[attr-defined]
    assert (again.temperature, again.num_predict) == (0.2, 4)
    embedding = adapters["LocalEmbedding"](model="m")
    assert type(embedding).from_dict(embedding.to_dict()).model == "m"  # type: ignore[attr-defined]


def test_llama_index_per_call_arguments_are_checked(tiny_gguf: Path) -> None:
    from llama_index.core.base.llms.types import ChatMessage

    from local_llm_integrations.llama_index import LocalLLM as IndexLLM

    llm = IndexLLM(model=str(tiny_gguf), temperature=0.0, max_tokens=2)
    msgs = [ChatMessage(role="user", content="hi")]
    with pytest.raises(UnknownOptionError, match="did you mean 'temperature'"):
        llm.chat(msgs, temprature=0.1)
    with pytest.raises(UnknownOptionError, match="'foo'"):
        llm.complete("hi", foo=1)
    with pytest.raises(UnknownOptionError, match="did you mean 'max_tokens'"):
        list(llm.stream_complete("hi", max_token=1))
    with pytest.raises(UnknownOptionError, match="did you mean 'num_ctx'"):
        asyncio.run(llm.achat(msgs, num_ctxx=5))
    # what LlamaIndex itself passes along is accepted
    response = llm.chat(
        msgs, verbose=True, error_on_no_tool_call=False, allow_parallel_tool_calls=False
    )
    assert response.message.role == "assistant"
    assert llm.complete("hi", formatted=True).text is not None


# Every Ollama-named option reaches the engine from every LLM adapter, at construction
# and per call (one model: ``ModelOptions``; the adapters' fields and ``OPTION_FIELDS``
# are derived from it, so adding an option there is what makes the adapters accept it).
ADAPTER_OPTIONS = {
    "temperature": 0.5, "top_p": 0.9, "top_k": 20, "min_p": 0.05, "typical_p": 0.95,
    "repeat_penalty": 1.2, "repeat_last_n": 16, "presence_penalty": 0.5,
    "frequency_penalty": 0.5, "seed": 3, "num_ctx": 256, "num_predict": 2, "stop": ["zz"],
    "num_thread": 1, "num_batch": 64, "logprobs": True, "top_logprobs": 2,
}  # fmt: skip
_COMPANIONS: dict[str, dict[str, object]] = {"top_logprobs": {"logprobs": True}}
"""Options another option needs beside it (``top_logprobs`` above 0 needs ``logprobs``)."""


def test_the_option_list_covers_the_readme_options() -> None:
    from local_llm_integrations._options import OPTION_FIELDS

    assert set(ADAPTER_OPTIONS) | {"num_gpu"} == set(OPTION_FIELDS)
    assert set(OPTION_FIELDS) <= set(OPTIONS)


@pytest.mark.parametrize("name", sorted(ADAPTER_OPTIONS))
def test_every_option_reaches_the_engine_from_every_adapter(tiny_gguf: Path, name: str) -> None:
    from local_llm_integrations import ChatLocal
    from local_llm_integrations.langchain import LocalLLM as LangChainLLM
    from local_llm_integrations.llama_index import LocalLLM as IndexLLM

    value = ADAPTER_OPTIONS[name]
    base = {"model": str(tiny_gguf), "num_predict": 2, "num_thread": 1, **_COMPANIONS.get(name, {})}
    for cls in (ChatLocal, LangChainLLM):
        assert cls(**{**base, name: value}).engine_options()[name] == value
    chat = ChatLocal(**base)
    assert chat.invoke("hi", **{name: value}).response_metadata["finish_reason"]
    index = IndexLLM(**{**base, name: value})
    assert getattr(index, name) == value
    assert index.complete("hi").text is not None
