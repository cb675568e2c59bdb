"""Typed results of generation: stream chunks, usage, timings and whole responses.

Every generation is one stream of chunks: text deltas, reasoning deltas,
tool-call deltas, then exactly one :class:`FinalChunk` with the finish reason,
usage and timings. Non-streaming calls aggregate the same stream with
:func:`aggregate`, so both paths report the same usage.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "ChatResult",
    "Chunk",
    "FinalChunk",
    "EmbeddingTask",
    "FinishReason",
    "ModelInfo",
    "ReasoningDelta",
    "RunningModel",
    "TextDelta",
    "Timings",
    "ToolCallDelta",
    "ToolChoice",
    "TokenLogprob",
    "TopLogprob",
    "Usage",
    "aggregate",
]

FinishReason = Literal["stop", "length", "tool_calls", "cancelled"]

ToolChoice = Literal["auto", "required", "any", "none"] | str
"""``auto``, ``none``, ``required``/``any`` (some tool) or a tool name (OpenAI's choices)."""

EmbeddingTask = Literal["query", "document"]
"""What a text is embedded as, for models trained with task prefixes."""

Capability = Literal["completion", "tools", "thinking", "embedding", "insert", "vision"]
"""A model capability, as Ollama's ``/api/show`` ``capabilities`` list names them."""

DEFAULT_NUM_CTX = 4096
"""The context window a request gets when ``num_ctx`` is not set (capped by the model's)."""


@dataclass(frozen=True)
class ModelInfo:
    """What a backend knows about a model without loading it (``show``, LlamaIndex metadata).

    Fields follow Ollama's ``/api/show`` ``details``/``model_info`` where they exist.
    """

    name: str
    """The reference the caller gave (``qwen2.5:7b``, ``hf.co/...``, a path)."""
    kind: Literal["chat", "embedding"]
    """``embedding`` for a model whose GGUF declares pooling (an embedding model)."""
    capabilities: tuple[str, ...]
    """Ollama's capability names: ``completion``, ``tools``, ``thinking``, ``embedding``."""
    context_length: int | None = None
    """``{arch}.context_length``: the context the model was trained with (tokens)."""
    embedding_length: int | None = None
    """Width of the hidden state (and of an embedding vector), ``{arch}.embedding_length``."""
    architecture: str | None = None
    """``general.architecture`` (``qwen2``, ``llama``, ``nomic-bert``, ...)."""
    parameter_size: str | None = None
    """Human parameter count (``494.0M``, ``7.6B``), as Ollama's ``details.parameter_size``."""
    quantization_level: str | None = None
    """``Q4_K_M``, ``F16``...: as Ollama's ``details.quantization_level``."""
    default_num_ctx: int = DEFAULT_NUM_CTX
    """The context a request gets when ``num_ctx`` is not set (before the cap)."""

    def context_window(self, num_ctx: int | None = None) -> int:
        """The context a request gets (tokens), as the in-process engine loads it.

        ``num_ctx`` when set, else :attr:`default_num_ctx`; either capped by
        :attr:`context_length` when set (as the in-process engine caps it).
        """
        trained = self.context_length
        if num_ctx:
            return min(num_ctx, trained) if trained else num_ctx
        return min(self.default_num_ctx, trained) if trained else self.default_num_ctx

    @property
    def supports_tools(self) -> bool:
        """Whether the model's chat template renders tools."""
        return "tools" in self.capabilities


@dataclass(frozen=True)
class RunningModel:
    """One entry of ``ps()``: a loaded model, like ``ollama ps`` / ``GET /api/ps``."""

    name: str
    path: Path
    size: int
    """Bytes of the model file(s)."""
    num_ctx: int
    gpu_layers: int
    """Layers offloaded to the GPU (0: CPU only)."""
    offload: str
    """Why that many layers (the offload decision, in words)."""
    embedding: bool
    expires_at: datetime | None
    """When it will be unloaded if idle (``None``: never / while in use)."""
    active_requests: int
    parallel: int = 1
    """Requests decoded together (``LOCAL_LLM_NUM_PARALLEL``; 1: one at a time)."""


@dataclass(frozen=True)
class Usage:
    """Token counts of one request."""

    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class Timings:
    """Where the time of one request went (seconds), like ``ollama run --verbose``."""

    load_s: float
    """Time spent loading the model for this request (0 when it was warm)."""
    queue_s: float
    """Time spent waiting for the model (other requests were using it)."""
    prompt_s: float
    """Prompt processing, up to the first generated token."""
    generation_s: float
    """Generating the completion tokens after the first."""
    prompt_tokens: int = 0
    """Prompt tokens actually evaluated (cached prefix tokens are not)."""
    sampled_tokens: int = 0
    """Tokens sampled, the end-of-generation token included."""

    @property
    def prompt_tokens_per_s(self) -> float:
        """Prompt evaluation rate."""
        return self.prompt_tokens / self.prompt_s if self.prompt_s > 0 else 0.0

    @property
    def generation_tokens_per_s(self) -> float:
        """Generation rate (tokens sampled after the first, over the time after the first)."""
        n = max(0, self.sampled_tokens - 1)
        return n / self.generation_s if self.generation_s > 0 else 0.0


@dataclass(frozen=True)
class TopLogprob:
    r"""One of the most likely tokens at a position, and its log-probability.

    ``token`` is the token's text (bytes that are not whole UTF-8 characters are
    written ``\xNN``); ``bytes`` its exact UTF-8 bytes, as OpenAI's ``bytes``.
    """

    token: str
    logprob: float
    bytes: tuple[int, ...] = ()


@dataclass(frozen=True)
class TokenLogprob:
    """A generated token's log-probability and the most likely alternatives there.

    ``logprob`` is the natural log of the token's probability under the model's
    raw distribution at that position (a log-softmax of its logits, before
    temperature, penalties, top-k/top-p or a grammar), as OpenAI and vLLM report
    it; ``top_logprobs`` holds the ``top_logprobs`` most likely tokens, most
    likely first (the generated token may or may not be among them).
    """

    token: str
    logprob: float
    bytes: tuple[int, ...] = ()
    top_logprobs: tuple[TopLogprob, ...] = ()


@dataclass(frozen=True)
class TextDelta:
    """A piece of the answer."""

    text: str
    logprobs: tuple[TokenLogprob, ...] = ()
    """The tokens this piece completes, with their log-probabilities, when the request
    asked for ``logprobs`` (else empty)."""


@dataclass(frozen=True)
class ReasoningDelta:
    """A piece of the model's reasoning (``<think>`` block), separate from the answer."""

    text: str
    logprobs: tuple[TokenLogprob, ...] = ()
    """As :attr:`TextDelta.logprobs`, for reasoning tokens."""


@dataclass(frozen=True)
class ToolCallDelta:
    """One complete tool call, parsed from the model's own tool-call syntax.

    A call whose arguments do not validate against the tool's JSON schema comes
    with ``error`` set: it must not be run (adapters report it as invalid).
    """

    index: int
    """Position among this response's tool calls (0, 1, ... for parallel calls)."""
    id: str
    name: str
    arguments: dict[str, Any]
    error: str | None = None
    """Why the arguments do not validate against the tool's schema; ``None`` when they do."""

    @property
    def arguments_json(self) -> str:
        """The arguments as a JSON string (OpenAI style)."""
        return json.dumps(self.arguments, ensure_ascii=False)


@dataclass(frozen=True)
class FinalChunk:
    """The last chunk of every stream."""

    finish_reason: FinishReason
    usage: Usage
    timings: Timings
    model: str


Chunk = TextDelta | ReasoningDelta | ToolCallDelta | FinalChunk


@dataclass
class ChatResult:
    """A whole response: the aggregate of a stream."""

    text: str = ""
    reasoning: str = ""
    tool_calls: list[ToolCallDelta] = field(default_factory=list)
    """The valid tool calls, safe to run."""
    invalid_tool_calls: list[ToolCallDelta] = field(default_factory=list)
    """Calls of offered tools whose arguments do not validate (``error`` says why)."""
    finish_reason: FinishReason = "stop"
    usage: Usage = field(default_factory=lambda: Usage(0, 0))
    timings: Timings | None = None
    model: str = ""
    logprobs: list[TokenLogprob] = field(default_factory=list)
    """The answer's tokens with their log-probabilities (requests with ``logprobs``)."""
    reasoning_logprobs: list[TokenLogprob] = field(default_factory=list)
    """The reasoning's tokens with their log-probabilities (requests with ``logprobs``)."""


def aggregate(chunks: Iterable[Chunk]) -> ChatResult:
    """Fold a stream of chunks into one :class:`ChatResult`."""
    result = ChatResult()
    text: list[str] = []
    reasoning: list[str] = []
    for chunk in chunks:
        if isinstance(chunk, TextDelta):
            text.append(chunk.text)
            result.logprobs.extend(chunk.logprobs)
        elif isinstance(chunk, ReasoningDelta):
            reasoning.append(chunk.text)
            result.reasoning_logprobs.extend(chunk.logprobs)
        elif isinstance(chunk, ToolCallDelta):
            (result.tool_calls if chunk.error is None else result.invalid_tool_calls).append(chunk)
        else:
            result.finish_reason = chunk.finish_reason
            result.usage = chunk.usage
            result.timings = chunk.timings
            result.model = chunk.model
    result.text = "".join(text)
    result.reasoning = "".join(reasoning)
    return result
