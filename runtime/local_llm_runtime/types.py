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
from typing import Any, Literal

__all__ = [
    "ChatResult",
    "Chunk",
    "FinalChunk",
    "FinishReason",
    "ReasoningDelta",
    "TextDelta",
    "Timings",
    "ToolCallDelta",
    "Usage",
    "aggregate",
]

FinishReason = Literal["stop", "length", "tool_calls", "cancelled"]


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
class TextDelta:
    """A piece of the answer."""

    text: str


@dataclass(frozen=True)
class ReasoningDelta:
    """A piece of the model's reasoning (``<think>`` block), separate from the answer."""

    text: str


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


def aggregate(chunks: Iterable[Chunk]) -> ChatResult:
    """Fold a stream of chunks into one :class:`ChatResult`."""
    result = ChatResult()
    text: list[str] = []
    reasoning: list[str] = []
    for chunk in chunks:
        if isinstance(chunk, TextDelta):
            text.append(chunk.text)
        elif isinstance(chunk, ReasoningDelta):
            reasoning.append(chunk.text)
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
