"""Embedding vectors as both APIs return them: ``dimensions`` shortening (pure).

The rule itself is the runtime's (:func:`local_llm_runtime.vectors.finish_vectors`),
shared with every engine and adapter; the endpoints pass ``dimensions`` to the engine.
This wrapper only turns a refusal into a 400 naming the ``dimensions`` field.
"""

from __future__ import annotations

from collections.abc import Sequence

from local_llm_runtime.errors import InvalidOptionError
from local_llm_runtime.server.errors import HTTPError
from local_llm_runtime.vectors import finish_vectors

__all__ = ["shorten"]


def shorten(vectors: Sequence[list[float]], dimensions: int | None) -> list[list[float]]:
    """The first ``dimensions`` values of each vector, L2-renormalized.

    OpenAI's ``dimensions`` and Ollama's ``/api/embed`` ``dimensions`` both shorten this
    way (meaningful for models trained for it, Matryoshka-style). ``None`` or the full
    width returns the vectors unchanged (they are unit vectors already).

    Raises:
        HTTPError: 400 (``param`` ``dimensions``) when ``dimensions`` exceeds the width.
    """
    if dimensions is None or not vectors or dimensions == len(vectors[0]):
        return list(vectors)
    try:
        return finish_vectors(vectors, dimensions=dimensions, normalize=True)
    except InvalidOptionError as exc:
        raise HTTPError(400, f"dimensions: {exc}", param="dimensions") from None
