"""Breaking the logprobs / embedding ``dimensions``+``truncate`` features as a demanding user.

Each block is one KIND of defect found by feeding odd values to every path:

* ``truncate`` was tested for truthiness in the engines: ``truncate="false"`` silently
  shortened the text the caller asked to refuse, ``None``/``0`` refused. Now every engine
  (in-process, FakeEngine, remote) checks it is a real bool before any work or I/O.
* A JSON/Python boolean was taken as a number by every lax pydantic int/float field of the
  OpenAI wire and the adapters: ``"logprobs": false`` on ``/v1/completions`` returned
  log-probabilities, ``"dimensions": true`` one-value vectors, ``"max_tokens": true`` one
  token, ``LocalEmbeddings(dimensions=True)`` one-value vectors. Now refused (400 naming
  the field; ``ValidationError`` naming the field for the adapters).
* ``/v1/embeddings`` with ``dimensions`` above the model's width answered a 400 whose
  ``param`` was null: now ``param: "dimensions"``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from starlette.testclient import TestClient

from local_llm_runtime.errors import InvalidOptionError, LocalLLMError
from local_llm_runtime.interface import EngineProtocol
from local_llm_runtime.testing import FakeEngine
from tests.support.server import make_app

NOT_BOOLS = ["false", "true", "no", 0, 1, None, 0.0, [], "False"]
"""Values a caller may pass for ``truncate`` that are not ``True``/``False``."""


# ---- truncate: a real bool, checked by every engine before any work -------------------------


@pytest.mark.parametrize("value", NOT_BOOLS, ids=repr)
def test_check_truncate_refuses_what_is_not_a_bool(value: object) -> None:
    from local_llm_runtime.vectors import check_truncate

    with pytest.raises(InvalidOptionError, match=r"truncate must be True or False"):
        check_truncate(value)


@pytest.mark.parametrize("value", [True, False])
def test_check_truncate_keeps_a_bool(value: bool) -> None:
    from local_llm_runtime.vectors import check_truncate

    assert check_truncate(value) is value


def _fake() -> EngineProtocol:
    return FakeEngine(dimension=16)


def _remote() -> EngineProtocol:
    from local_llm_runtime.remote import RemoteEngine
    from local_llm_runtime.settings import RemoteSettings

    # Nothing listens there: a refusal must come before any request.
    return RemoteEngine(remote=RemoteSettings(base_url="http://127.0.0.1:9"))


@pytest.mark.parametrize("make", [_fake, _remote], ids=["fake", "remote"])
@pytest.mark.parametrize("value", ["false", None, 0], ids=repr)
def test_every_engine_refuses_a_non_bool_truncate_before_any_work(
    make: Callable[[], EngineProtocol], value: object
) -> None:
    engine = make()
    with pytest.raises(InvalidOptionError, match="truncate"):
        engine.embed("m", ["a text"], truncate=value)  # type: ignore[arg-type]
    with pytest.raises(InvalidOptionError, match="truncate"):
        asyncio.run(engine.aembed("m", ["a text"], truncate=value))


@pytest.fixture
def llama_engine() -> Iterator[Any]:
    from local_llm_runtime.llama.engine import Engine

    eng = Engine()
    yield eng
    eng.pool.close()


def test_llama_engine_truncate_text_false_no_longer_shortens_silently(
    llama_engine: Any, tiny_gguf: Path
) -> None:
    long_text = "a " * 300
    model = str(tiny_gguf)
    for value in ("false", None, 0):
        with pytest.raises(InvalidOptionError, match="truncate"):
            llama_engine.embed(model, [long_text], options={"num_ctx": 16}, truncate=value)
    assert llama_engine.ps() == []  # refused before loading anything
    (vector,) = llama_engine.embed(model, [long_text], options={"num_ctx": 16}, truncate=True)
    assert len(vector) == 64


# ---- booleans are not numbers: the OpenAI wire ----------------------------------------------

_CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
_COMPLETION = {"model": "m", "prompt": "hi"}
_EMBED = {"model": "m", "input": ["a"]}

BOOL_AS_NUMBER = [
    # (path, body, field): every int/float field of the OpenAI requests
    ("/v1/chat/completions", _CHAT, "max_tokens"),
    ("/v1/chat/completions", _CHAT, "max_completion_tokens"),
    ("/v1/chat/completions", _CHAT, "seed"),
    ("/v1/chat/completions", _CHAT, "n"),
    ("/v1/chat/completions", _CHAT, "temperature"),
    ("/v1/chat/completions", _CHAT, "top_p"),
    ("/v1/chat/completions", _CHAT, "frequency_penalty"),
    ("/v1/chat/completions", _CHAT, "presence_penalty"),
    ("/v1/chat/completions", _CHAT, "top_k"),
    ("/v1/chat/completions", _CHAT, "min_p"),
    ("/v1/chat/completions", _CHAT, "repeat_penalty"),
    ("/v1/chat/completions", {**_CHAT, "logprobs": True}, "top_logprobs"),
    ("/v1/completions", _COMPLETION, "logprobs"),
    ("/v1/completions", _COMPLETION, "best_of"),
    ("/v1/completions", _COMPLETION, "max_tokens"),
    ("/v1/embeddings", _EMBED, "dimensions"),
]


@pytest.fixture
def client() -> Iterator[TestClient]:
    engine = FakeEngine(responses=["Hello!"], cycle=True, dimension=16)
    with TestClient(make_app(engine), raise_server_exceptions=False) as c:
        yield c


@pytest.mark.parametrize("value", [True, False])
@pytest.mark.parametrize(("path", "body", "field"), BOOL_AS_NUMBER)
def test_a_boolean_in_a_number_field_is_a_400_naming_it(
    client: TestClient, path: str, body: dict[str, Any], field: str, value: bool
) -> None:
    response = client.post(path, json={**body, field: value})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == field
    assert error["message"].startswith(f"{field}:") and "boolean" in error["message"]


def test_legacy_logprobs_false_asks_for_nothing_and_numbers_still_work(
    client: TestClient,
) -> None:
    # before: false was 0 alternatives, i.e. log-probabilities were returned
    refused = client.post("/v1/completions", json={**_COMPLETION, "logprobs": False})
    assert refused.status_code == 400
    for value in (0, 2, "2", 2.0):  # numbers and numeric text keep working
        body = client.post("/v1/completions", json={**_COMPLETION, "logprobs": value}).json()
        assert body["choices"][0]["logprobs"] is not None, body
    plain = client.post("/v1/completions", json=_COMPLETION).json()
    assert plain["choices"][0]["logprobs"] is None
    for value in ("8", 8.0, 8):
        data = client.post("/v1/embeddings", json={**_EMBED, "dimensions": value}).json()
        assert len(data["data"][0]["embedding"]) == 8


def test_v1_embeddings_dimensions_above_the_width_names_the_field(client: TestClient) -> None:
    response = client.post("/v1/embeddings", json={**_EMBED, "dimensions": 17})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "dimensions" and "at most 16" in error["message"]
    ollama = client.post("/api/embed", json={**_EMBED, "dimensions": 17})
    assert ollama.status_code == 400 and "dimensions=17" in ollama.json()["error"]


# ---- booleans are not numbers: the adapters -------------------------------------------------


def _adapters() -> list[tuple[str, Callable[..., Any], dict[str, Any], str]]:
    from local_llm_integrations.langchain import ChatLocal, LocalEmbeddings
    from local_llm_integrations.llama_index import LocalEmbedding, LocalLLM

    return [
        ("LocalEmbeddings", LocalEmbeddings, {"model": "m"}, "dimensions"),
        ("LocalEmbeddings", LocalEmbeddings, {"model": "m"}, "batch_size"),
        ("LocalEmbedding", LocalEmbedding, {"model_name": "m"}, "dimensions"),
        ("LocalEmbedding", LocalEmbedding, {"model_name": "m"}, "embed_batch_size"),
        ("ChatLocal", ChatLocal, {"model": "m"}, "timeout"),
        ("ChatLocal", ChatLocal, {"model": "m"}, "max_retries"),
        ("LocalLLM", LocalLLM, {"model": "m"}, "request_timeout"),
    ]


@pytest.mark.parametrize("index", range(7))
def test_an_adapter_number_field_refuses_a_boolean(index: int) -> None:
    name, cls, base, field = _adapters()[index]
    engine = FakeEngine(dimension=16)
    with pytest.raises((ValidationError, LocalLLMError)) as caught:
        cls(**base, engine=engine, **{field: True})
    assert field in str(caught.value) and "boolean" in str(caught.value), name


def test_adapter_dimensions_still_take_a_number() -> None:
    from local_llm_integrations.langchain import LocalEmbeddings
    from local_llm_integrations.llama_index import LocalEmbedding

    engine = FakeEngine(dimension=16)
    assert len(LocalEmbeddings(model="m", engine=engine, dimensions=4).embed_query("a")) == 4
    embed = LocalEmbedding(model_name="m", engine=engine, dimensions=4)
    assert len(embed.get_text_embedding("a")) == 4


# ---- :auto and explicit pulls: what a listing offers instead, and unreadable headers -------

_GIB = 1 << 30

NO_USABLE_GGUF = [
    # (listing, what the error must say); before: "has no GGUF files to choose from." for
    # every one, and an explicit pull of an incomplete split said "No Q4_K_M ... Available:
    # Q4_K_M" (the missing quantization offered as available)
    ({"README.md": b"x", "model.safetensors": b"y"}, ["has no GGUF files", "-GGUF"]),
    ({"m-Q4_K_M-00001-of-00002.gguf": b"x"}, ["Q4_K_M (shard 2 of 2 not listed)", "try again"]),
    (
        {"m-Q8_0-00002-of-00003.gguf": b"x", "m-Q8_0-00003-of-00003.gguf": b"x"},
        ["Q8_0 (shard 1 of 3 not listed)"],
    ),
    ({"mmproj-model-f16.gguf": b"x"}, ["only GGUF files are projectors", "mmproj-model-f16"]),
]


@pytest.mark.parametrize(("files", "expected"), NO_USABLE_GGUF)
@pytest.mark.parametrize("tag", ["auto", "Q4_K_M", None])
def test_a_repo_without_a_usable_gguf_says_what_is_there_and_what_to_do(
    fake_hub: Any, files: dict[str, bytes], expected: list[str], tag: str | None
) -> None:
    from local_llm_runtime import ModelLibrary
    from local_llm_runtime.errors import QuantizationNotFoundError
    from local_llm_runtime.store.auto_quant import MemoryBudget

    fake_hub.add_repo("o/r", files)
    lib = ModelLibrary(memory=lambda: MemoryBudget(64 * _GIB, 0, "available RAM"))
    name = "hf.co/o/r" + (f":{tag}" if tag else "")
    with pytest.raises(QuantizationNotFoundError) as caught:
        lib.pull(name)
    message = str(caught.value)
    for part in expected:
        assert part in message, message
    assert "Available: Q4_K_M" not in message and "Available: Q8_0" not in message


def test_available_lists_only_complete_quantizations() -> None:
    from local_llm_runtime.errors import QuantizationNotFoundError
    from local_llm_runtime.store.hub import select_files

    paths = [
        "m-Q8_0.gguf",
        "m-Q4_K_M-00001-of-00002.gguf",  # shard 2 missing
        "m-Q6_K-00001-of-00002.gguf",
        "m-Q6_K-00002-of-00002.gguf",
    ]
    with pytest.raises(QuantizationNotFoundError) as caught:
        select_files(paths, "Q4_K_M")
    message = str(caught.value)
    assert "Available: Q6_K, Q8_0." in message and "Q4_K_M (shard 2 of 2" in message


CORRUPT_HEADERS = [
    b"GGUF" + b"\xff" * 4000,  # an impossible version
    b"hello world" * 100,  # not a GGUF at all
    b"GGUF\x03\x00\x00\x00" + b"\xff" * 4000,  # absurd tensor/metadata counts
]


@pytest.mark.parametrize("data", CORRUPT_HEADERS, ids=["version", "magic", "counts"])
def test_auto_with_a_corrupt_header_names_the_repo_and_says_to_name_a_quant(
    fake_hub: Any, data: bytes
) -> None:
    from local_llm_runtime import ModelLibrary
    from local_llm_runtime.errors import InvalidModelFileError
    from local_llm_runtime.store.auto_quant import MemoryBudget

    fake_hub.add_repo("o/bad", {"m-Q4_K_M.gguf": data})
    lib = ModelLibrary(memory=lambda: MemoryBudget(64 * _GIB, 0, "available RAM"))
    with pytest.raises(InvalidModelFileError) as caught:
        lib.pull("hf.co/o/bad:auto")
    message = str(caught.value)
    assert "hf.co/o/bad" in message and "name a quantization instead of auto" in message
    assert lib.list() == []
