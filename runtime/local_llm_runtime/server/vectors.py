"""Embedding vectors as both APIs return them: ``dimensions`` shortening (pure)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from local_llm_runtime.server.errors import HTTPError

__all__ = ["shorten"]


def shorten(vectors: Sequence[list[float]], dimensions: int | None) -> list[list[float]]:
    """The first ``dimensions`` values of each vector, L2-renormalized.

    OpenAI's ``dimensions`` and Ollama's ``/api/embed`` ``dimensions`` both shorten this
    way (meaningful for models trained for it, Matryoshka-style). ``None`` or the full
    width returns the vectors unchanged.

    Raises:
        HTTPError: 400 (``param`` ``dimensions``) when ``dimensions`` exceeds the width.
    """
    if dimensions is None or not vectors:
        return list(vectors)
    width = len(vectors[0])
    if dimensions > width:
        raise HTTPError(
            400,
            f"dimensions: {dimensions} is more than this model's {width} dimensions; "
            f"give at most {width}",
            param="dimensions",
        )
    if dimensions == width:
        return list(vectors)
    out = []
    for vector in vectors:
        head = vector[:dimensions]
        norm = math.sqrt(sum(x * x for x in head))
        out.append([x / norm for x in head] if norm > 0 else head)
    return out
