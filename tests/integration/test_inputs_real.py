"""Empty and over-long texts on the demo model (Qwen adds no BOS: ``""`` has no tokens)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from local_llm_integrations.langchain import LocalEmbeddings


@pytest.fixture(scope="module")
def embeddings(demo_model: Path) -> LocalEmbeddings:
    return LocalEmbeddings(model=str(demo_model), num_ctx=64)


def test_empty_text_has_a_vector_and_leaves_the_batch_alone(embeddings: LocalEmbeddings) -> None:
    empty = embeddings.embed_query("")  # was RuntimeError: llama_decode returned -1
    assert len(empty) == 896 and np.isfinite(empty).all()
    batch = embeddings.embed_documents(["a", "", "b"])  # was SystemError (NULL pointer)
    alone = [embeddings.embed_documents([t])[0] for t in ["a", "", "b"]]
    for got, want in zip(batch, alone, strict=True):
        assert np.allclose(got, want, atol=1e-4)
    assert np.allclose(batch[1], empty, atol=1e-4)
    assert np.allclose(embeddings.embed_query(""), empty, atol=1e-6)


def test_text_longer_than_the_context_is_truncated(embeddings: LocalEmbeddings) -> None:
    long = "The quick brown fox jumps over the lazy dog. " * 40  # ~400 tokens > num_ctx=64
    vector = embeddings.embed_query(long)
    assert np.allclose(vector, embeddings.embed_query(long + " And more."), atol=1e-4)
