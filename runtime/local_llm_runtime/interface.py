"""The engine interface: what every backend implements and every adapter depends on.

Adapters (LangChain, LlamaIndex), the CLI and the HTTP server talk to an
:class:`EngineProtocol`, never to llama.cpp. Implementations:

* :class:`local_llm_runtime.llama.LlamaEngine` -- in-process llama.cpp (the default,
  :func:`local_llm_runtime.default_engine`);
* :class:`local_llm_runtime.testing.FakeEngine` -- scripted chunks, recorded
  requests, no model (tests, users' own chain tests);
* a remote backend (an OpenAI-compatible or Ollama endpoint) has the same shape.

This module imports no backend: it is a :class:`typing.Protocol` (structural,
``runtime_checkable`` for ``isinstance`` checks of the method names), plus the
shared argument types. Every method takes a model reference as the runtime
understands it (``qwen2.5:7b``, ``hf.co/org/repo:Q4_K_M``, a ``.gguf`` path).

Streams: ``chat_stream``/``generate_stream`` return a
:class:`~local_llm_runtime.streams.ChunkStream` (iterate it; close it or use
``with`` when stopping early) of text, reasoning and tool-call chunks ending in
exactly one :class:`~local_llm_runtime.types.FinalChunk`; the ``a``-prefixed
twins return an :class:`~local_llm_runtime.streams.AsyncChunkStream`.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol, runtime_checkable

from local_llm_runtime.prompt.reasoning import ReasoningMode
from local_llm_runtime.streams import AsyncChunkStream, ChunkStream
from local_llm_runtime.types import (
    ChatResult,
    EmbeddingTask,
    ModelInfo,
    RunningModel,
    ToolChoice,
)

__all__ = ["EngineProtocol", "JsonFormat"]

JsonFormat = Mapping[str, Any] | Literal["json"]
"""A JSON schema the answer must follow, or ``"json"`` for any JSON (Ollama's ``format``)."""


@runtime_checkable
class EngineProtocol(Protocol):
    """Chat, completion, embeddings, tokens and model control over some backend.

    Errors are the runtime's typed errors (:mod:`local_llm_runtime.errors`):
    ``ModelNotFoundError``, ``InvalidOptionError``, ``ContextLengthExceededError``,
    ``RequestTimeoutError``, ``TemplateError``... whatever the backend.
    """

    def chat_stream(
        self,
        model: str,
        messages: Sequence[Mapping[str, Any]],
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: ToolChoice = "auto",
        parallel_tool_calls: bool = True,
        format: JsonFormat | None = None,
        options: Mapping[str, Any] | None = None,
        reasoning: ReasoningMode = "separate",
        keep_alive: float | str | None = None,
        cancel: threading.Event | None = None,
        timeout: float | None = None,
    ) -> ChunkStream:
        """Stream a chat response (OpenAI-style ``messages`` and ``tools``).

        Args:
            model: A model reference.
            messages: ``{"role", "content"}`` mappings (system/user/assistant/tool,
                ``tool_calls`` and ``tool_call_id`` where relevant).
            tools: OpenAI-style function tools.
            tool_choice: ``auto``, ``none``, ``required``/``any`` or a tool name.
            parallel_tool_calls: ``False``: at most one tool call.
            format: A JSON schema (or ``"json"``) the answer must follow.
            options: Ollama-named options (:class:`~local_llm_runtime.options.ModelOptions`).
            reasoning: ``separate`` (reasoning chunks), ``hide`` or ``inline``.
            keep_alive: How long the model stays loaded after this request
                (seconds, or Ollama's duration strings ``"5m"``; negative: forever).
            cancel: Set it to stop generation within a token (finish ``cancelled``).
            timeout: Seconds for the whole request, counted from this call.
        """
        ...

    def chat(self, model: str, messages: Sequence[Mapping[str, Any]], **kwargs: Any) -> ChatResult:
        """The whole :meth:`chat_stream` response at once (same keyword arguments)."""
        ...

    def generate_stream(
        self,
        model: str,
        prompt: str,
        *,
        system: str | None = None,
        raw: bool = False,
        format: JsonFormat | None = None,
        options: Mapping[str, Any] | None = None,
        keep_alive: float | str | None = None,
        cancel: threading.Event | None = None,
        timeout: float | None = None,
    ) -> ChunkStream:
        """Stream a completion (Ollama's ``generate``).

        The prompt is sent as a user message (with ``system``), or continued as
        is with ``raw=True``; other arguments as :meth:`chat_stream`.
        """
        ...

    def generate(self, model: str, prompt: str, **kwargs: Any) -> ChatResult:
        """The whole :meth:`generate_stream` response at once (same keyword arguments)."""
        ...

    def achat_stream(
        self,
        model: str,
        messages: Sequence[Mapping[str, Any]],
        *,
        cancel: threading.Event | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> AsyncChunkStream:
        """Async :meth:`chat_stream`: cancelling the consuming task stops generation."""
        ...

    async def achat(
        self, model: str, messages: Sequence[Mapping[str, Any]], **kwargs: Any
    ) -> ChatResult:
        """Async :meth:`chat`."""
        ...

    def agenerate_stream(
        self,
        model: str,
        prompt: str,
        *,
        cancel: threading.Event | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> AsyncChunkStream:
        """Async :meth:`generate_stream`."""
        ...

    async def agenerate(self, model: str, prompt: str, **kwargs: Any) -> ChatResult:
        """Async :meth:`generate`."""
        ...

    def embed(
        self,
        model: str,
        texts: Sequence[str],
        *,
        normalize: bool = True,
        task: EmbeddingTask | None = None,
        prefix: str | None = None,
        options: Mapping[str, Any] | None = None,
        keep_alive: float | str | None = None,
        dimensions: int | None = None,
        truncate: bool = True,
    ) -> list[list[float]]:
        """Exactly one vector per text, in order (L2-normalized unless ``normalize=False``).

        Args:
            model: A model reference.
            texts: The texts (a list; one string is an error, not a list of characters).
            normalize: L2-normalize every vector.
            task: ``query`` or ``document``: models trained with task prefixes get theirs.
            prefix: An explicit prefix instead (``""`` for none).
            options: Load options (``num_ctx``, ``num_gpu``, ``num_thread``).
            keep_alive: As :meth:`chat_stream`.
            dimensions: Keep the first this many values of each vector, then normalize
                (Matryoshka, as Ollama's and OpenAI's ``dimensions``; see
                :func:`local_llm_runtime.vectors.finish_vectors`); ``None``: full width.
            truncate: A text longer than the context (``num_ctx`` tokens) is cut to its
                first ``num_ctx`` tokens; ``False`` raises
                :class:`~local_llm_runtime.errors.ContextLengthExceededError` instead.

        Raises:
            InvalidOptionError: ``dimensions`` below 1 or above the model's width.
            ContextLengthExceededError: A text over the context with ``truncate=False``.
        """
        ...

    async def aembed(self, model: str, texts: Sequence[str], **kwargs: Any) -> list[list[float]]:
        """Async :meth:`embed`."""
        ...

    def tokenize(self, model: str, text: str, *, special: bool = False) -> list[int]:
        """The model's token ids for ``text`` (no BOS); ``special`` parses control-token text."""
        ...

    def count_chat_tokens(
        self,
        model: str,
        messages: Sequence[Mapping[str, Any]],
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> int:
        """Prompt tokens a :meth:`chat` with these messages (and tools) would send.

        Equal to that request's ``usage.prompt_tokens``.
        """
        ...

    def model_info(self, model: str) -> ModelInfo:
        """What the backend knows about a model, without loading or downloading it.

        Raises:
            ModelNotFoundError: The model is not available to this backend
                (for the in-process engine: not pulled yet).
        """
        ...

    def preload(
        self,
        model: str,
        *,
        options: Mapping[str, Any] | None = None,
        embedding: bool = False,
        keep_alive: float | str | None = None,
    ) -> RunningModel:
        """Load a model now (normally the first request does).

        ``keep_alive`` as in :meth:`chat_stream` (Ollama's empty request with
        ``keep_alive: -1`` keeps a model loaded for good).
        """
        ...

    def ps(self) -> list[RunningModel]:
        """The models loaded now, like ``ollama ps``."""
        ...

    def unload(self, model: str | None = None) -> int:
        """Unload a model (or every model) now; returns how many instances were unloaded."""
        ...
