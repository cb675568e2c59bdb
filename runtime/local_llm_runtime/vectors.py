"""Embedding vectors after the model: ``dimensions`` (Matryoshka shortening) and L2 norms.

One rule for every engine (in-process, remote, fake), adapter and the server, as
Ollama's ``/api/embed`` and OpenAI's ``/v1/embeddings`` apply ``dimensions``: keep
the first ``dimensions`` values of each vector, then L2-normalize them (meaningful
for models trained for it, Matryoshka-style; on other models the prefix is still a
valid, if weaker, vector). Pure: no I/O, no backend.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from local_llm_runtime.errors import InvalidOptionError

__all__ = ["check_dimensions", "check_truncate", "finish_vectors", "l2_normalize"]


def check_dimensions(dimensions: object) -> int | None:
    """Validate a ``dimensions`` argument before any work is done.

    Args:
        dimensions: ``None`` (the model's full width) or a positive integer.

    Returns:
        The value, unchanged.

    Raises:
        InvalidOptionError: For a non-integer (``True`` included) or a value below 1.
    """
    if dimensions is None:
        return None
    if isinstance(dimensions, bool) or not isinstance(dimensions, int):
        raise InvalidOptionError(
            f"dimensions must be a positive integer or None, not {dimensions!r}."
        )
    if dimensions < 1:
        raise InvalidOptionError(f"dimensions must be at least 1, got {dimensions}.")
    return dimensions


def check_truncate(truncate: object) -> bool:
    """Validate a ``truncate`` argument before any work is done.

    Only a real ``bool`` is accepted: the text ``"false"`` is truthy, so a truthiness
    test would silently shorten the text the caller asked to refuse, and ``None`` or
    ``0`` would refuse a text the caller did not ask about.

    Args:
        truncate: ``True`` (cut an over-long text to the context) or ``False`` (refuse it).

    Returns:
        The value, unchanged.

    Raises:
        InvalidOptionError: For anything but ``True`` or ``False`` (the message says which).
    """
    if not isinstance(truncate, bool):
        raise InvalidOptionError(
            f"truncate must be True or False, not {truncate!r}: True cuts a text longer than "
            "the context to its first tokens, False raises ContextLengthExceededError."
        )
    return truncate


def l2_normalize(vector: Sequence[float]) -> list[float]:
    """``vector`` scaled to unit length (a zero vector is returned unchanged)."""
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector] if norm > 0 else list(vector)


def finish_vectors(
    vectors: Sequence[Sequence[float]], *, dimensions: int | None, normalize: bool
) -> list[list[float]]:
    """Shorten (``dimensions``) and then L2-normalize (``normalize``) a model's vectors.

    Args:
        vectors: One vector per text, all of the model's width ``n_embd``.
        dimensions: Keep the first this many values of each vector; ``None`` keeps
            them all.
        normalize: Scale each (shortened) vector to unit length. With
            ``dimensions`` and ``normalize`` (the default everywhere) a result is the
            unit vector in the direction of the full vector's first ``dimensions``
            values, as Ollama and OpenAI return it.

    Returns:
        New lists of floats, ``dimensions`` (or ``n_embd``) long each.

    Raises:
        InvalidOptionError: If ``dimensions`` is not a positive integer or exceeds the
            width of the vectors (the message gives the width).
    """
    check_dimensions(dimensions)
    out = [[float(x) for x in vector] for vector in vectors]
    if dimensions is not None and out:
        width = len(out[0])
        if dimensions > width:
            raise InvalidOptionError(
                f"dimensions={dimensions} is more than this model's {width} dimensions; "
                f"give at most {width} (or None for the full vector)."
            )
        out = [vector[:dimensions] for vector in out]
    return [l2_normalize(vector) for vector in out] if normalize else out
