"""``LocalEmbeddings``: LangChain embeddings from a local GGUF model."""

from __future__ import annotations

from typing import Any

from langchain_core.embeddings import Embeddings
from pydantic import ConfigDict, Field, model_validator

from local_llm_integrations._options import (
    EmbeddingOptionFields,
    EngineSetting,
    RemoteFields,
    check_constructor_arguments,
)
from local_llm_runtime.interface import EngineProtocol
from local_llm_runtime.numbers import NotBoolInt
from local_llm_runtime.types import EmbeddingTask

__all__ = ["LocalEmbeddings"]


class LocalEmbeddings(EmbeddingOptionFields, RemoteFields, Embeddings):
    """Embed text with a local GGUF model (an embedding model, or a chat model with mean pooling).

    Runs on its own pool entry (llama.cpp embedding mode), batched, one vector
    per input, L2-normalized by default. No I/O at construction. The load options
    (``num_ctx``, ``num_batch``, ``num_gpu``, ``num_thread``) and ``keep_alive`` are
    fields from :class:`~local_llm_runtime.options.ModelOptions`.

    Example:
        .. code-block:: python

            from local_llm_integrations.langchain import LocalEmbeddings

            embeddings = LocalEmbeddings(model="nomic-embed-text")
            vectors = embeddings.embed_documents(["hello", "world"])
    """

    model_config = ConfigDict(protected_namespaces=())

    model: str
    """Model reference (``nomic-embed-text``, ``hf.co/...``, a ``.gguf`` path, ...)."""

    normalize: bool = True
    """L2-normalize every vector (cosine similarity becomes a dot product)."""

    query_prefix: str | None = None
    """Prefix for queries; ``None`` uses the model's own convention (nomic-embed-text:
    ``search_query: ``), ``""`` none."""

    document_prefix: str | None = None
    """Prefix for documents; ``None`` uses the model's own convention (nomic-embed-text:
    ``search_document: ``), ``""`` none."""

    dimensions: NotBoolInt | None = Field(default=None, ge=1)
    """Keep the first this many values of each vector, then L2-normalize (Matryoshka, as
    Ollama's and OpenAI's ``dimensions``); ``None`` keeps the model's full width. More
    than the model's width raises ``InvalidOptionError`` on the first call."""

    truncate: bool = True
    """Cut a text longer than the context (``num_ctx`` tokens) to its first ``num_ctx``
    tokens; ``False`` raises ``ContextLengthExceededError`` instead of returning the
    vector of a silently shortened text."""

    batch_size: NotBoolInt = Field(default=64, ge=1)
    """Texts per engine call; other requests on the model can run between batches."""

    preload: bool = False
    """Load the model when the object is created (otherwise on first use)."""

    engine: EngineSetting = Field(default=None, exclude=True, repr=False)
    """The engine that serves this model: ``None`` (default) is the process-wide
    in-process engine (:func:`local_llm_runtime.default_engine`, looked up at call time);
    pass :class:`local_llm_runtime.testing.FakeEngine` in tests, or another backend.
    Excluded from serialization."""

    def __init__(self, **data: Any) -> None:
        """Create the embeddings; unknown or misspelt keywords and bad option values raise.

        Raises:
            UnknownOptionError: For a keyword the class does not know (with the
                closest known name), instead of ignoring it.
            ValidationError: For an option value out of its field's bounds.
            InvalidOptionError: For a value the runtime refuses (a malformed ``keep_alive``).
        """
        check_constructor_arguments(type(self), data)
        super().__init__(**data)
        self.check_option_values()

    @model_validator(mode="after")
    def _maybe_preload(self) -> LocalEmbeddings:
        if self.preload:
            self._serving_engine().preload(self.model, options=self._options(), embedding=True)
        return self

    def _serving_engine(self) -> EngineProtocol:
        return self.serving_engine()

    def _options(self) -> dict[str, Any]:
        return self.option_values(("load",))

    def _kwargs(self, task: EmbeddingTask) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "normalize": self.normalize,
            "options": self._options(),
            "task": task,
            "prefix": self.query_prefix if task == "query" else self.document_prefix,
            "dimensions": self.dimensions,
            "truncate": self.truncate,
        }
        kwargs.update(self.option_values(("request",)))  # keep_alive
        return kwargs

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed documents: one vector per text, in order."""
        out: list[list[float]] = []
        for start in range(0, len(texts), self.batch_size):
            out.extend(
                self._serving_engine().embed(
                    self.model, texts[start : start + self.batch_size], **self._kwargs("document")
                )
            )
        return out

    def embed_query(self, text: str) -> list[float]:
        """Embed one query."""
        return self._serving_engine().embed(self.model, [text], **self._kwargs("query"))[0]

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        """Async :meth:`embed_documents` (the engine runs in a worker thread)."""
        out: list[list[float]] = []
        for start in range(0, len(texts), self.batch_size):
            batch = texts[start : start + self.batch_size]
            out.extend(
                await self._serving_engine().aembed(self.model, batch, **self._kwargs("document"))
            )
        return out

    async def aembed_query(self, text: str) -> list[float]:
        """Async :meth:`embed_query`."""
        return (await self._serving_engine().aembed(self.model, [text], **self._kwargs("query")))[0]
