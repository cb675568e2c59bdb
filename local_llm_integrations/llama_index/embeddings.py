"""``LocalEmbedding``: LlamaIndex embeddings from a local GGUF model, in-process.

Each batch of ``embed_batch_size`` texts is one ``engine.embed`` call (llama.cpp
batches it); async calls run in a worker thread. The runtime keeps a separate
embedding instance of the model (pooling on, its own KV cache), shared with
every other adapter in the process.
"""

from __future__ import annotations

from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from llama_index.core.bridge.pydantic import Field, model_validator

from local_llm_integrations._options import (
    ENGINE_FIELD_DOC,
    EmbeddingOptionFields,
    EngineSetting,
    RemoteFields,
    check_constructor_arguments,
)
from local_llm_runtime.interface import EngineProtocol
from local_llm_runtime.numbers import NotBoolInt
from local_llm_runtime.types import EmbeddingTask

__all__ = ["LocalEmbedding"]


class LocalEmbedding(EmbeddingOptionFields, RemoteFields, BaseEmbedding):
    """Text and query embeddings from a local GGUF model (embedding or generative).

    The load options (``num_ctx``, ``num_batch``, ``num_gpu``, ``num_thread``) and
    ``keep_alive`` are fields from :class:`~local_llm_runtime.options.ModelOptions`.

    Example:
        .. code-block:: python

            from llama_index.core import Settings, VectorStoreIndex
            from local_llm_integrations.llama_index import LocalEmbedding

            Settings.embed_model = LocalEmbedding(model="nomic-embed-text")
            index = VectorStoreIndex.from_documents(documents)
    """

    model: str = Field(
        description=(
            "Model reference: an Ollama-style name (`nomic-embed-text`), "
            "`hf.co/org/repo:QUANT`, or a path to a `.gguf` file. Also sets `model_name`."
        )
    )
    embed_batch_size: NotBoolInt = Field(
        default=32,
        gt=0,
        le=2048,
        description="Texts per engine call (llama.cpp evaluates a batch at once).",
    )
    normalize: bool = Field(default=True, description="L2-normalize every vector.")
    query_instruction: str | None = Field(
        default=None,
        description=(
            "Prefix for queries; None uses the model's own convention "
            "(nomic-embed-text: 'search_query: '), '' none."
        ),
    )
    text_instruction: str | None = Field(
        default=None,
        description=(
            "Prefix for documents; None uses the model's own convention "
            "(nomic-embed-text: 'search_document: '), '' none."
        ),
    )
    dimensions: NotBoolInt | None = Field(
        default=None,
        ge=1,
        description=(
            "Keep the first this many values of each vector, then L2-normalize (Matryoshka, "
            "as Ollama's and OpenAI's `dimensions`); None keeps the model's full width."
        ),
    )
    truncate: bool = Field(
        default=True,
        description=(
            "Cut a text longer than the context (num_ctx tokens); False raises "
            "ContextLengthExceededError instead of embedding a silently shortened text."
        ),
    )
    preload: bool = Field(
        default=False,
        description="Load the model when the object is created (otherwise on the first call).",
    )

    engine: EngineSetting = Field(
        default=None, exclude=True, repr=False, description=ENGINE_FIELD_DOC
    )

    def __init__(self, **data: Any) -> None:
        """Create the embedding model; unknown or misspelt keywords and bad values raise.

        Raises:
            UnknownOptionError: For a keyword the class does not know (with the
                closest known name), instead of ignoring it.
            ValidationError: For an option value out of its field's bounds.
            InvalidOptionError: For a value the runtime refuses (a malformed ``keep_alive``).
        """
        check_constructor_arguments(type(self), data, ["class_name"])  # from to_dict()
        super().__init__(**data)
        self.check_option_values()

    @model_validator(mode="before")
    @classmethod
    def _model_name(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            if "model" not in data and "model_name" in data:
                data["model"] = data["model_name"]
            if "model" in data:
                data["model_name"] = data["model"]
        return data

    @model_validator(mode="after")
    def _maybe_preload(self) -> LocalEmbedding:
        if self.preload:
            self._serving_engine().preload(self.model, options=self._options(), embedding=True)
        return self

    @classmethod
    def class_name(cls) -> str:
        """Name used when serializing."""
        return "LocalEmbedding"

    def _serving_engine(self) -> EngineProtocol:
        return self.serving_engine()

    def _options(self) -> dict[str, Any]:
        return self.option_values(("load",))

    def _call_kwargs(self, task: EmbeddingTask) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "normalize": self.normalize,
            "options": self._options(),
            "task": task,
            "prefix": self.query_instruction if task == "query" else self.text_instruction,
            "dimensions": self.dimensions,
            "truncate": self.truncate,
        }
        kwargs.update(self.option_values(("request",)))  # keep_alive
        return kwargs

    # ---- BaseEmbedding -------------------------------------------------------

    def _get_query_embedding(self, query: str) -> Embedding:
        return self._serving_engine().embed(self.model, [query], **self._call_kwargs("query"))[0]

    async def _aget_query_embedding(self, query: str) -> Embedding:
        vectors = await self._serving_engine().aembed(
            self.model, [query], **self._call_kwargs("query")
        )
        return vectors[0]

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._get_text_embeddings([text])[0]

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return (await self._aget_text_embeddings([text]))[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return self._serving_engine().embed(self.model, texts, **self._call_kwargs("document"))

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return await self._serving_engine().aembed(
            self.model, texts, **self._call_kwargs("document")
        )
