"""``dimensions`` and ``truncate`` on the demo model (896-wide vectors, Qwen adds no BOS)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from local_llm_integrations.langchain import LocalEmbeddings
from local_llm_runtime import ContextLengthExceededError

LONG = "The quick brown fox jumps over the lazy dog. " * 40  # ~400 tokens


def test_dimensions_and_truncate_on_the_demo_model(demo_model: Path) -> None:
    full = LocalEmbeddings(model=str(demo_model), num_ctx=64, normalize=False)
    short = LocalEmbeddings(model=str(demo_model), num_ctx=64, dimensions=128)
    strict = LocalEmbeddings(model=str(demo_model), num_ctx=64, truncate=False)
    raw = np.array(full.embed_query("a red apple"))
    head = np.array(short.embed_query("a red apple"))
    assert raw.shape == (896,) and head.shape == (128,)
    assert np.isclose(np.linalg.norm(head), 1.0, atol=1e-6)
    assert np.allclose(head, raw[:128] / np.linalg.norm(raw[:128]), atol=1e-5)
    with pytest.raises(ContextLengthExceededError):
        strict.embed_query(LONG)
    assert len(full.embed_query(LONG)) == 896  # truncate=True (default): a vector
    assert len(strict.embed_query("short enough")) == 896
