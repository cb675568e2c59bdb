"""LocalEmbedding (LlamaIndex): batching, prefixes, options and async on FakeEngine; vectors on the tiny model."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding

from local_llm_integrations.llama_index import LocalEmbedding
from local_llm_runtime.llama.engine import Engine
from local_llm_runtime.testing import FakeEngine


def make(**fields: Any) -> tuple[LocalEmbedding, FakeEngine]:
    engine = FakeEngine()
    return LocalEmbedding(model=fields.pop("model", "emb"), engine=engine, **fields), engine


def test_is_a_base_embedding() -> None:
    assert issubclass(LocalEmbedding, BaseEmbedding)


def test_construction_does_no_io_and_loads_no_backend() -> None:
    code = (
        "import sys\n"
        "from local_llm_integrations.llama_index import LocalEmbedding\n"
        "e = LocalEmbedding(model='nomic-embed-text')\n"
        "assert e.model_name == 'nomic-embed-text' and e.engine is None\n"
        "assert LocalEmbedding(model_name='nomic-embed-text').model == 'nomic-embed-text'\n"
        "print(sorted(m for m in sys.modules if m.startswith(('llama_cpp', 'local_llm_runtime.llama'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_batches_follow_embed_batch_size() -> None:
    embedding, engine = make(embed_batch_size=2)
    texts = [f"text number {i}" for i in range(5)]
    vectors = embedding.get_text_embedding_batch(texts)
    assert [r.texts for r in engine.requests] == [texts[0:2], texts[2:4], texts[4:5]]
    assert len(vectors) == 5
    assert all(math.isclose(sum(x * x for x in v), 1.0, rel_tol=1e-6) for v in vectors)
    assert embedding.get_text_embedding("text number 3") == vectors[3]


def test_batching_does_not_change_real_vectors(tiny_gguf: Path) -> None:
    engine = Engine()
    try:
        embedding = LocalEmbedding(model=str(tiny_gguf), embed_batch_size=2, engine=engine)
        vectors = embedding.get_text_embedding_batch([f"text number {i}" for i in range(5)])
        single = embedding.get_text_embedding("text number 3")
        assert max(abs(a - b) for a, b in zip(single, vectors[3], strict=True)) < 1e-3
    finally:
        engine.pool.close()


def test_query_and_text_instructions() -> None:
    embedding, engine = make(
        query_instruction="search_query: ", text_instruction="search_document: "
    )
    query = embedding.get_query_embedding("where?")
    text = embedding.get_text_embedding("here.")
    assert [(r.task, r.prefix) for r in engine.requests] == [
        ("query", "search_query: "),
        ("document", "search_document: "),
    ]
    by_hand = FakeEngine().embed("emb", ["search_query: where?", "search_document: here."])
    assert [query, text] == by_hand


def test_options_reach_the_engine() -> None:
    embedding, engine = make(num_ctx=256, normalize=False, keep_alive=0)
    vector = embedding.get_query_embedding("hello")
    request = engine.last_request
    assert (request.method, request.normalize, request.options, request.keep_alive) == (
        "embed",
        False,
        {"num_ctx": 256},
        0,
    )
    assert (request.task, request.prefix) == ("query", None)  # the model's own convention
    assert not math.isclose(sum(x * x for x in vector), 1.0, rel_tol=1e-3)
    assert engine.ps() == []  # keep_alive=0: unloaded right after


async def test_async() -> None:
    embedding, engine = make(embed_batch_size=3)
    texts = [f"t{i}" for i in range(7)]
    vectors = await embedding.aget_text_embedding_batch(texts)
    assert len(vectors) == 7
    assert sorted(len(r.texts or []) for r in engine.requests) == [1, 3, 3]
    assert {r.method for r in engine.requests} == {"aembed"}
    assert await embedding.aget_query_embedding("t0") == vectors[0]


def test_preload_loads_the_embedding_instance() -> None:
    engine = FakeEngine()
    LocalEmbedding(model="emb", preload=True, num_ctx=128, engine=engine)
    assert [(p.name, p.embedding, p.num_ctx) for p in engine.ps()] == [("emb", True, 128)]
