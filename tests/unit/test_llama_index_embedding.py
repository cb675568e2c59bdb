"""LocalEmbedding (LlamaIndex) on the tiny model: batching, prefixes, async, no I/O at construction."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from llama_index.core.base.embeddings.base import BaseEmbedding

import local_llm_integrations.llama_index.embeddings as embeddings_module
from local_llm_integrations.llama_index import LocalEmbedding
from local_llm_runtime.llama.engine import Engine


class SpyEngine(Engine):
    """A real engine that records what ``embed`` was asked."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[str]] = []
        self.kwargs: list[dict[str, Any]] = []

    def embed(self, model: str, texts: Any, **kwargs: Any) -> list[list[float]]:
        self.batches.append(list(texts))
        self.kwargs.append(kwargs)
        return super().embed(model, texts, **kwargs)


@pytest.fixture
def spy() -> Iterator[SpyEngine]:
    engine = SpyEngine()
    yield engine
    engine.pool.close()


def make(spy: SpyEngine, model: Path, **fields: Any) -> LocalEmbedding:
    embedding = LocalEmbedding(model=str(model), **fields)
    embedding._engine = spy
    return embedding


def test_is_a_base_embedding() -> None:
    assert issubclass(LocalEmbedding, BaseEmbedding)


def test_construction_does_no_io(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom() -> Engine:
        raise AssertionError("the engine was touched at construction")

    monkeypatch.setattr(embeddings_module, "default_engine", boom)
    embedding = LocalEmbedding(model="nomic-embed-text")
    assert embedding.model_name == "nomic-embed-text"
    assert LocalEmbedding(model_name="nomic-embed-text").model == "nomic-embed-text"


def test_batches_follow_embed_batch_size(spy: SpyEngine, tiny_gguf: Path) -> None:
    embedding = make(spy, tiny_gguf, embed_batch_size=2)
    texts = [f"text number {i}" for i in range(5)]
    vectors = embedding.get_text_embedding_batch(texts)
    assert spy.batches == [texts[0:2], texts[2:4], texts[4:5]]
    assert len(vectors) == 5
    assert all(math.isclose(sum(x * x for x in v), 1.0, rel_tol=1e-4) for v in vectors)
    # batching does not change the vectors
    single = embedding.get_text_embedding("text number 3")
    assert max(abs(a - b) for a, b in zip(single, vectors[3], strict=True)) < 1e-3


def test_query_and_text_instructions(spy: SpyEngine, tiny_gguf: Path) -> None:
    embedding = make(
        spy, tiny_gguf, query_instruction="search_query: ", text_instruction="search_document: "
    )
    query = embedding.get_query_embedding("where?")
    text = embedding.get_text_embedding("here.")
    assert [(k["task"], k["prefix"]) for k in spy.kwargs] == [
        ("query", "search_query: "),
        ("document", "search_document: "),
    ]
    by_hand = Engine.embed(spy, str(tiny_gguf), ["search_query: where?", "search_document: here."])
    for got, want in zip([query, text], by_hand, strict=True):
        assert max(abs(a - b) for a, b in zip(got, want, strict=True)) < 1e-3


def test_options_reach_the_engine(spy: SpyEngine, tiny_gguf: Path) -> None:
    embedding = make(spy, tiny_gguf, num_ctx=256, normalize=False, keep_alive=0)
    vector = embedding.get_query_embedding("hello")
    assert spy.kwargs[-1] == {
        "normalize": False,
        "options": {"num_ctx": 256},
        "keep_alive": 0,
        "task": "query",
        "prefix": None,  # the model's own convention (none for this model)
    }
    assert not math.isclose(sum(x * x for x in vector), 1.0, rel_tol=1e-3)
    assert spy.ps() == []  # keep_alive=0: unloaded right after


async def test_async(spy: SpyEngine, tiny_gguf: Path) -> None:
    embedding = make(spy, tiny_gguf, embed_batch_size=3)
    texts = [f"t{i}" for i in range(7)]
    vectors = await embedding.aget_text_embedding_batch(texts)
    assert len(vectors) == 7
    assert sorted(len(b) for b in spy.batches) == [1, 3, 3]
    query = await embedding.aget_query_embedding("t0")
    assert max(abs(a - b) for a, b in zip(query, vectors[0], strict=True)) < 1e-3


def test_preload_loads_the_embedding_instance(
    tiny_gguf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = Engine()
    monkeypatch.setattr(embeddings_module, "default_engine", lambda: engine)
    try:
        LocalEmbedding(model=str(tiny_gguf), preload=True)
        assert [p.embedding for p in engine.ps()] == [True]
    finally:
        engine.pool.close()
