"""Embeddings packed many texts per decode give the vectors of one text at a time.

The reference is llama.cpp's own path, unbatched: a ``Llama`` with mean pooling
embedding one text per call.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import llama_cpp
import numpy as np
import pytest

from local_llm_runtime.llama import repack
from local_llm_runtime.llama.embedding import PACK_SEQUENCES, PACK_TOKENS, embed_texts
from local_llm_runtime.llama.engine import Engine

WORDS = ["the", "a", "is", "hello", "world", "and", "of", "to"]


def _text(i: int, n_words: int) -> str:
    return " ".join(WORDS[(i * 3 + j * (i % 5 + 1)) % len(WORDS)] for j in range(n_words))


@pytest.fixture
def engine() -> Iterator[Engine]:
    eng = Engine()
    yield eng
    eng.pool.close()


@pytest.fixture(scope="module")
def reference(tiny_gguf: Path) -> Iterator[llama_cpp.Llama]:
    """llama.cpp's mean pooling on the full graph, used one text per call."""
    with repack.like_the_runtime():
        llm = llama_cpp.Llama(
            str(tiny_gguf),
            n_ctx=2048,
            n_batch=2048,
            n_ubatch=2048,
            embedding=True,
            pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN,
            verbose=False,
        )
    yield llm
    llm.close()


def _cosines(a: list[list[float]], b: list[list[float]]) -> np.ndarray:
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    return x @ y.T


def test_packed_vectors_equal_one_text_at_a_time(
    engine: Engine, tiny_gguf: Path, reference: llama_cpp.Llama
) -> None:
    # Short texts of many lengths (more than one decode's worth of sequences),
    # one longer than a packed batch, and an empty text among them.
    texts = [_text(i, 1 + (i * 7) % 23) for i in range(PACK_SEQUENCES + 40)]
    long = _text(99, PACK_TOKENS + 100)
    assert len(reference.tokenize(long.encode())) > PACK_TOKENS
    texts[10:10] = [long]
    texts[50:50] = ["", long[:300]]

    vectors = engine.embed(str(tiny_gguf), texts, normalize=False)

    assert len(vectors) == len(texts)
    alone = [reference.embed([t])[0] for t in texts]  # "" is its BOS token here too
    cos = _cosines(vectors, alone)
    assert np.diag(cos).min() >= 0.9999
    # order: every vector is closest to its own text's vector (texts differ)
    distinct = [i for i in range(len(texts)) if texts.index(texts[i]) == i]
    assert all(int(np.argmax(cos[i, distinct])) == distinct.index(i) for i in distinct)


def test_packing_does_not_change_a_text_vector(engine: Engine, tiny_gguf: Path) -> None:
    texts = [_text(i, 5 + i % 17) for i in range(3 * PACK_SEQUENCES)]
    together = engine.embed(str(tiny_gguf), texts, normalize=False)
    alone = [engine.embed(str(tiny_gguf), [t], normalize=False)[0] for t in texts[::9]]
    assert np.diag(_cosines(together[::9], alone)).min() >= 0.9999


def test_batches_split_at_the_sequence_and_token_budgets(tiny_gguf: Path) -> None:
    with repack.like_the_runtime():
        llm = llama_cpp.Llama(
            str(tiny_gguf),
            n_ctx=1024,
            n_batch=1024,
            n_ubatch=1024,
            embedding=True,
            pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN,
            verbose=False,
        )
    try:
        decodes: list[int] = []
        original = llm._ctx.decode

        def counting(batch: object) -> None:
            decodes.append(batch.batch.n_tokens)  # type: ignore[attr-defined]
            original(batch)

        llm._ctx.decode = counting  # type: ignore[method-assign]
        short, medium, long = "a", _text(2, 12), _text(1, 3 * PACK_TOKENS)
        n_short = len(llm.tokenize(short.encode()))
        n_medium = len(llm.tokenize(medium.encode()))
        assert len(llm.tokenize(long.encode())) > 1024  # truncated to n_batch
        per_batch = PACK_TOKENS // n_medium
        assert PACK_SEQUENCES * n_short < PACK_TOKENS and 1 < per_batch < 6
        texts = [short] * (PACK_SEQUENCES * 2 + 1) + [long] + [medium] * 6
        vectors = embed_texts(llm, texts)
        assert decodes == [PACK_SEQUENCES * n_short] * 2 + [n_short] + [1024] + [
            per_batch * n_medium,
            (6 - per_batch) * n_medium,
        ]  # the long text alone, truncated to n_batch
        assert len(vectors) == len(texts)
        assert np.diag(_cosines(vectors[:1], vectors[128:129])).min() >= 0.9999
        assert np.diag(_cosines(vectors[-6:-5], vectors[-1:])).min() >= 0.9999
    finally:
        llm.close()
