"""Embeddings ``dimensions`` (Matryoshka) and ``truncate`` on every engine, adapter and endpoint.

One rule (:func:`local_llm_runtime.vectors.finish_vectors`): keep the first
``dimensions`` values, then L2-normalize; ``truncate=False`` refuses a text over the
context with :class:`ContextLengthExceededError` instead of embedding its head.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from local_llm_integrations.langchain import LocalEmbeddings
from local_llm_integrations.llama_index import LocalEmbedding
from local_llm_runtime import ContextLengthExceededError, InvalidOptionError
from local_llm_runtime.llama.engine import Engine
from local_llm_runtime.remote import RemoteEngine
from local_llm_runtime.settings import RemoteSettings
from local_llm_runtime.store.library import ModelLibrary
from local_llm_runtime.testing import FakeEngine
from local_llm_runtime.types import ModelInfo
from local_llm_runtime.vectors import check_dimensions, finish_vectors
from tests.support.server import ServerThread, make_app

LONG = "hello world " * 200


def _norm(vector: Sequence[float]) -> float:
    return math.sqrt(math.fsum(x * x for x in vector))


def _is_prefix_direction(short: Sequence[float], full: Sequence[float]) -> bool:
    """``short`` is the unit vector in the direction of ``full``'s first values."""
    head = full[: len(short)]
    scale = _norm(head)
    return all(math.isclose(a, b / scale, abs_tol=1e-6) for a, b in zip(short, head, strict=True))


# ---- the pure rule ---------------------------------------------------------------------------

FULL = [[3.0, 4.0, 12.0, 0.0], [0.0, 0.0, 0.0, 1.0], [1.0, -1.0, 1.0, -1.0]]


@pytest.mark.parametrize(
    ("dimensions", "normalize", "expected"),
    [
        (None, False, FULL),
        (4, False, FULL),
        (2, False, [[3.0, 4.0], [0.0, 0.0], [1.0, -1.0]]),
        (2, True, [[0.6, 0.8], [0.0, 0.0], [1 / math.sqrt(2), -1 / math.sqrt(2)]]),
        (1, True, [[1.0], [0.0], [1.0]]),
        (
            None,
            True,
            [[3 / 13, 4 / 13, 12 / 13, 0.0], [0.0, 0.0, 0.0, 1.0], [0.5, -0.5, 0.5, -0.5]],
        ),
    ],
)
def test_finish_vectors_table(
    dimensions: int | None, normalize: bool, expected: list[list[float]]
) -> None:
    got = finish_vectors(FULL, dimensions=dimensions, normalize=normalize)
    assert got == [pytest.approx(row) for row in expected]
    assert FULL[0] == [3.0, 4.0, 12.0, 0.0]  # inputs are not modified


@pytest.mark.parametrize(
    ("dimensions", "message"),
    [
        (0, "at least 1"),
        (-3, "at least 1"),
        (True, "positive integer"),
        (2.0, "positive integer"),
        ("8", "positive integer"),
        (5, "more than this model's 4 dimensions; give at most 4"),
    ],
)
def test_bad_dimensions_are_refused(dimensions: Any, message: str) -> None:
    with pytest.raises(InvalidOptionError, match=message):
        finish_vectors(FULL, dimensions=dimensions, normalize=True)


def test_check_dimensions_passes_good_values() -> None:
    assert check_dimensions(None) is None and check_dimensions(7) == 7


# ---- the in-process engine (tiny GGUF, real llama.cpp) ---------------------------------------


@pytest.fixture
def engine() -> Iterator[Engine]:
    eng = Engine()
    yield eng
    eng.pool.close()


def test_llama_engine_dimensions_are_the_unit_prefix_direction(
    engine: Engine, tiny_gguf: Path
) -> None:
    model = str(tiny_gguf)
    texts = ["red apple", "a longer sentence about the sky"]
    full = engine.embed(model, texts, normalize=False)
    assert len(full[0]) == 64
    for dims in (1, 16, 63):
        short = engine.embed(model, texts, dimensions=dims)
        for s, f in zip(short, full, strict=True):
            assert len(s) == dims and math.isclose(_norm(s), 1.0, rel_tol=1e-6)
            assert _is_prefix_direction(s, f)
    whole = engine.embed(model, texts)
    same = engine.embed(model, texts, dimensions=64)  # the full width: unchanged
    assert [pytest.approx(v) for v in whole] == same
    raw = engine.embed(model, texts, dimensions=8, normalize=False)
    assert raw[0] == pytest.approx(full[0][:8])  # normalize=False: the plain prefix
    with pytest.raises(InvalidOptionError, match="at most 64"):
        engine.embed(model, texts, dimensions=65)


def test_llama_engine_truncate_false_refuses_an_over_long_text(
    engine: Engine, tiny_gguf: Path
) -> None:
    model = str(tiny_gguf)
    (vector,) = engine.embed(model, [LONG], options={"num_ctx": 16})  # truncate=True: a vector
    assert len(vector) == 64 and math.isclose(_norm(vector), 1.0, rel_tol=1e-6)
    with pytest.raises(ContextLengthExceededError) as caught:
        engine.embed(model, ["short", LONG], options={"num_ctx": 16}, truncate=False)
    assert caught.value.num_ctx == 16 and caught.value.prompt_tokens > 16
    with pytest.raises(ContextLengthExceededError):
        asyncio.run(engine.aembed(model, [LONG], options={"num_ctx": 16}, truncate=False))
    fits = engine.embed(model, ["short"], options={"num_ctx": 16}, truncate=False)
    assert len(fits[0]) == 64


def test_dimensions_are_checked_before_any_load(engine: Engine, tiny_gguf: Path) -> None:
    with pytest.raises(InvalidOptionError, match="at least 1"):
        engine.embed(str(tiny_gguf), ["x"], dimensions=0)
    assert engine.ps() == []


# ---- the fake engine ------------------------------------------------------------------------


def test_fake_engine_follows_the_same_rules() -> None:
    small = ModelInfo(name="e", kind="embedding", capabilities=("embedding",), context_length=8)
    fake = FakeEngine(models={"e": small}, dimension=16)
    full = fake.embed("e", ["red apple"], normalize=False)[0]
    short = fake.embed("e", ["red apple"], dimensions=4)[0]
    assert len(short) == 4 and _is_prefix_direction(short, full)
    assert fake.last_request.dimensions == 4 and fake.last_request.truncate is True
    words = [f"w{i}" for i in range(20)]
    long = " ".join(words)  # 20 tokens, the context is 8
    assert len(fake.embed("e", [long])[0]) == 16
    with pytest.raises(ContextLengthExceededError) as caught:
        fake.embed("e", [long], truncate=False)
    assert (caught.value.prompt_tokens, caught.value.num_ctx) == (20, 8)
    with pytest.raises(ContextLengthExceededError):
        asyncio.run(fake.aembed("e", [long], truncate=False))
    with pytest.raises(InvalidOptionError, match="at most 16"):
        fake.embed("e", ["x"], dimensions=17)
    # truncate=True embeds the first 8 tokens: the vector of the head alone
    roomy = FakeEngine(dimension=16)  # 4096-token context
    assert fake.embed("e", [long]) == roomy.embed("e", [" ".join(words[:8])])
    assert fake.embed("e", [long]) != roomy.embed("e", [long])


# ---- the adapters forward both --------------------------------------------------------------


def test_langchain_embeddings_forward_dimensions_and_truncate() -> None:
    fake = FakeEngine(dimension=16)
    emb = LocalEmbeddings(model="m", engine=fake, dimensions=6, truncate=False)
    assert len(emb.embed_query("red apple")) == 6
    assert fake.last_request.dimensions == 6 and fake.last_request.truncate is False
    assert [len(v) for v in emb.embed_documents(["a", "b"])] == [6, 6]
    assert len(asyncio.run(emb.aembed_query("x"))) == 6
    assert fake.last_request.method == "aembed" and fake.last_request.truncate is False
    default = LocalEmbeddings(model="m", engine=fake)
    assert len(default.embed_query("x")) == 16 and fake.last_request.truncate is True
    with pytest.raises(ValueError, match="dimensions"):
        LocalEmbeddings(model="m", engine=fake, dimensions=0)


def test_llama_index_embedding_forwards_dimensions_and_truncate() -> None:
    fake = FakeEngine(dimension=16)
    emb = LocalEmbedding(model="m", engine=fake, dimensions=5, truncate=False)
    assert len(emb.get_query_embedding("red apple")) == 5
    assert fake.last_request.dimensions == 5 and fake.last_request.truncate is False
    assert [len(v) for v in emb.get_text_embedding_batch(["a", "b", "c"])] == [5, 5, 5]
    assert len(asyncio.run(emb.aget_text_embedding("x"))) == 5
    assert fake.last_request.method == "aembed"
    with pytest.raises(ValueError, match="dimensions"):
        LocalEmbedding(model="m", engine=fake, dimensions=-1)


# ---- the remote engine sends them; the server passes them to its engine ----------------------


@pytest.fixture
def served(tiny_gguf: Path) -> Iterator[tuple[ServerThread, FakeEngine]]:
    small = ModelInfo(
        name="tiny:1b", kind="embedding", capabilities=("embedding",), context_length=8
    )
    fake = FakeEngine(models={"tiny:1b": small}, dimension=16)
    ModelLibrary().create("tiny:1b", str(tiny_gguf))
    with ServerThread(make_app(fake)) as running:
        yield running, fake


@pytest.mark.parametrize("dialect", ["openai", "ollama"])
def test_remote_engine_sends_dimensions_and_truncate(
    served: tuple[ServerThread, FakeEngine], dialect: str
) -> None:
    server, fake = served
    url = server.url + "/v1" if dialect == "openai" else server.url
    remote = RemoteEngine(remote=RemoteSettings(base_url=url))
    full = fake.embed("tiny:1b", ["red apple"], normalize=False)[0]
    (short,) = remote.embed("tiny:1b", ["red apple"], dimensions=4)
    assert fake.last_request.dimensions == 4  # the server's engine got it
    assert len(short) == 4 and _is_prefix_direction(short, full)
    (again,) = asyncio.run(remote.aembed("tiny:1b", ["red apple"], dimensions=4))
    assert again == pytest.approx(short)
    long = " ".join(["word"] * 20)
    if dialect == "ollama":  # Ollama's /api/embed has truncate; OpenAI's API has none
        with pytest.raises(ContextLengthExceededError):
            remote.embed("tiny:1b", [long], truncate=False)
        assert len(remote.embed("tiny:1b", [long])[0]) == 16
    with pytest.raises(InvalidOptionError, match="at least 1"):
        remote.embed("tiny:1b", ["x"], dimensions=0)  # refused before any request
