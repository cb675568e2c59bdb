"""Embeddings from a llama.cpp context: every text gets exactly one vector.

``Llama.embed`` (llama-cpp-python) hands llama.cpp whatever the tokenizer
returns. A text with no tokens -- ``""`` on a model that adds no BOS token, as
Qwen -- then reaches ``llama_decode`` as an empty batch (``RuntimeError:
llama_decode returned -1``) or, inside a larger batch, as a sequence without
outputs (a NULL pointer read: ``SystemError``), failing the whole batch. Here
the tokens are prepared first, so that every text has at least one token:

* **Empty text** (no tokens after tokenization) is embedded as the model's
  start-of-sequence token (BOS; EOS when the vocabulary has no BOS). That is
  what the text's own tokenization gives on models that add BOS (Llama) or
  BOS/EOS (BERT-style embedding models: ``[CLS] [SEP]``), so the empty text has
  one well-defined, deterministic vector on every model, as in Ollama, and it
  does not depend on what else is in the batch.
* **Text longer than the context** (``num_ctx`` tokens) is truncated to its
  first ``num_ctx`` tokens (Ollama's default ``truncate: true``), keeping the
  end-of-sequence marker that models such as BERT add, so the vector still
  pools over a properly terminated sequence. With ``truncate=False`` (Ollama's
  ``truncate: false``) it raises
  :class:`~local_llm_runtime.errors.ContextLengthExceededError` instead, before
  anything is evaluated.

Text is tokenized as plain text (``special=False``): control-token spellings
inside a document are not turned into control tokens.

Speed (as llama.cpp's ``examples/embedding``): many texts are packed into one
``llama_decode``, one sequence each (up to :data:`PACK_TOKENS` tokens and
:data:`PACK_SEQUENCES` sequences, the KV cache cleared between batches); a text
longer than that is evaluated alone. The packing budget is kept well below the
context: the attention of a packed batch costs ``tokens x tokens`` (the
sequences are masked from each other, not skipped), so a 4,096-token batch of
short texts spends more on attention than on the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import llama_cpp
import numpy as np

from local_llm_runtime.errors import (
    ContextLengthExceededError,
    GenerationError,
    InvalidOptionError,
)
from local_llm_runtime.llama import compute

__all__ = [
    "PACK_SEQUENCES",
    "PACK_TOKENS",
    "embed_texts",
    "embedding_tokens",
]

PACK_TOKENS = 256
"""The most tokens packed into one ``llama_decode`` of short texts (a longer text goes alone)."""

PACK_SEQUENCES = 64
"""The most texts (sequences) packed into one ``llama_decode``."""


def embedding_tokens(
    llm: llama_cpp.Llama, text: str, limit: int, *, truncate: bool = True
) -> list[int]:
    """The tokens a text is embedded from: never empty, at most ``limit`` long.

    Args:
        llm: An embedding instance (its vocabulary is used).
        text: The text (any string, ``""`` included).
        limit: The most tokens one sequence may have (the context size).
        truncate: Cut a longer text to ``limit`` tokens; ``False`` raises instead.

    Returns:
        The text's tokens with the model's own BOS/EOS as its tokenizer adds
        them; the BOS (or EOS) token alone for a text with no tokens; the first
        ``limit`` tokens (keeping an added end marker) for a longer one.

    Raises:
        InvalidOptionError: If the text has no tokens and the vocabulary has
            neither a BOS nor an EOS token to stand for it.
        ContextLengthExceededError: If the text has more than ``limit`` tokens and
            ``truncate`` is false.
    """
    vocab = llm._model.vocab
    tokens = list(llm.tokenize(text.encode("utf-8"), add_bos=True, special=False))
    if not tokens:
        for marker in (llama_cpp.llama_vocab_bos(vocab), llama_cpp.llama_vocab_eos(vocab)):
            if marker >= 0:
                return [int(marker)]
        raise InvalidOptionError(
            "An empty text cannot be embedded with this model: it has no tokens and the "
            "vocabulary has no BOS or EOS token to stand for it. Drop empty texts first."
        )
    if len(tokens) > limit and not truncate:
        raise ContextLengthExceededError(len(tokens), limit, embedding=True)
    if len(tokens) > limit:
        adds_end = llama_cpp.llama_vocab_get_add_eos(vocab) or llama_cpp.llama_vocab_get_add_sep(
            vocab
        )
        ends = {llama_cpp.llama_vocab_eos(vocab), llama_cpp.llama_vocab_sep(vocab)}
        tail = [tokens[-1]] if adds_end and tokens[-1] in ends and limit > 1 else []
        tokens = tokens[: limit - len(tail)] + tail
    return tokens


def embed_texts(
    llm: llama_cpp.Llama, texts: Sequence[str], *, truncate: bool = True
) -> list[list[float]]:
    """Embed texts on an embedding instance: exactly one pooled vector per text, in order.

    Texts are packed into batches of up to :data:`PACK_TOKENS` tokens and
    :data:`PACK_SEQUENCES` sequences (fewer where ``n_batch`` or the context's
    ``n_seq_max`` is smaller), one sequence each, and evaluated with a cleared
    cache; a text longer than :data:`PACK_TOKENS` tokens is evaluated alone (up
    to ``n_batch`` tokens, see :func:`embedding_tokens`). Models whose pooling
    is ``NONE`` return token vectors, which are averaged here.

    Args:
        llm: A ``Llama`` created with ``embedding=True``.
        texts: The texts (may be empty strings).
        truncate: Cut a text longer than the context; ``False`` raises
            :class:`~local_llm_runtime.errors.ContextLengthExceededError` (every text
            is tokenized and checked before the first batch is evaluated).

    Returns:
        One vector of ``n_embd`` floats per text (not normalized).

    Raises:
        GenerationError: If llama.cpp fails to evaluate a batch or returns no
            embedding for a sequence.
    """
    n_batch = int(llm.n_batch)
    budget = min(n_batch, PACK_TOKENS)
    max_seqs = max(1, min(PACK_SEQUENCES, int(llm.context_params.n_seq_max)))
    n_embd = int(llm.n_embd())
    context: Any = llm._ctx  # llama-cpp-python's internal wrappers (untyped)
    batch: Any = llm._batch
    ctx = context.ctx
    pooled = int(llama_cpp.llama_pooling_type(ctx)) != llama_cpp.LLAMA_POOLING_TYPE_NONE
    out: list[list[float]] = []
    pending: list[list[int]] = []
    used = 0

    def flush() -> None:
        nonlocal used
        if not pending:
            return
        batch.reset()
        for seq_id, tokens in enumerate(pending):
            batch.add_sequence(tokens, seq_id, True)
        context.kv_cache_clear()
        try:
            compute.run(context.decode, batch)  # one OpenMP team per process (see compute)
        except RuntimeError as exc:
            raise GenerationError(f"llama.cpp failed to embed a batch: {exc}") from exc
        finally:
            batch.reset()
        if pooled:
            for seq_id in range(len(pending)):
                vector = _read(llama_cpp.llama_get_embeddings_seq(ctx, seq_id), (n_embd,))
                out.append(vector.tolist())
        else:  # token vectors in batch order (every token is an output): average per text
            rows = _read(llama_cpp.llama_get_embeddings(ctx), (used, n_embd))
            start = 0
            for tokens in pending:
                end = start + len(tokens)
                out.append(rows[start:end].mean(axis=0, dtype=np.float64).tolist())
                start = end
        pending.clear()
        used = 0

    prepared = [embedding_tokens(llm, text, n_batch, truncate=truncate) for text in texts]
    try:
        for tokens in prepared:
            if used + len(tokens) > budget or len(pending) >= max_seqs:
                flush()
            pending.append(tokens)
            used += len(tokens)
            if used >= budget:  # a text as long as the budget, or longer: alone
                flush()
        flush()
    finally:
        context.kv_cache_clear()
    return out


def _read(pointer: object, shape: tuple[int, ...]) -> Any:
    """A copy of llama.cpp's float output at ``pointer`` as an array of ``shape``."""
    if not pointer:
        raise GenerationError("llama.cpp returned no embedding for a sequence")
    return np.ctypeslib.as_array(pointer, shape=shape).astype(np.float32, copy=True)
