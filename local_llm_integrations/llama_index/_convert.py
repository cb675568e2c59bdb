"""Pure converters between LlamaIndex's types and the runtime's.

* ``ChatMessage`` (text, thinking and tool-call blocks, tool results) ->
  OpenAI-style message dicts the runtime renders with the model's own template.
* Runtime chunks (``TextDelta``, ``ReasoningDelta``, ``ToolCallDelta``,
  ``FinalChunk``) -> streamed ``ChatResponse``s: every response carries the whole
  message so far (a ``ThinkingBlock``, a ``TextBlock``, ``ToolCallBlock``s), the
  new answer text in ``delta`` and new reasoning in
  ``additional_kwargs["thinking_delta"]``, as llama-index-core 0.14 expects;
  with ``logprobs`` requested, ``logprobs`` holds the answer's tokens so far
  (:func:`position_logprobs`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from llama_index.core.base.llms.types import (
    CachePoint,
    ChatMessage,
    ChatResponse,
    CitableBlock,
    CitationBlock,
    CompletionResponse,
    ContentBlock,
    LogProb,
    MessageRole,
    TextBlock,
    ThinkingBlock,
    ToolCallBlock,
)
from llama_index.core.llms.llm import ToolSelection

from local_llm_runtime.errors import InvalidToolCallError
from local_llm_runtime.types import (
    Chunk,
    FinalChunk,
    ReasoningDelta,
    TextDelta,
    TokenLogprob,
    ToolCallDelta,
)

__all__ = [
    "ChatAccumulator",
    "chat_responses",
    "completion_response",
    "keep_first_tool_call",
    "position_logprobs",
    "to_runtime_messages",
    "tool_selections",
]

TOOL_CALL_ERRORS = "tool_call_errors"
"""``additional_kwargs`` key of an assistant message: ``{tool_call_id: error}`` for the
calls whose arguments do not match their tool's schema (they must not be run)."""

logger = logging.getLogger(__name__)

_ROLES = {
    MessageRole.SYSTEM: "system",
    MessageRole.DEVELOPER: "system",
    MessageRole.USER: "user",
    MessageRole.ASSISTANT: "assistant",
    MessageRole.CHATBOT: "assistant",
    MessageRole.MODEL: "assistant",
    MessageRole.TOOL: "tool",
    MessageRole.FUNCTION: "tool",
}


# ---- LlamaIndex -> runtime ----------------------------------------------------


def _block_text(block: ContentBlock) -> str | None:
    """Text of a block that carries text; ``None`` for blocks handled elsewhere."""
    if isinstance(block, TextBlock):
        return block.text
    if isinstance(block, CitableBlock):
        return "".join(b.text for b in block.content if isinstance(b, TextBlock))
    if isinstance(block, CitationBlock):
        cited = block.cited_content
        return cited.text if isinstance(cited, TextBlock) else ""
    if isinstance(block, ThinkingBlock | ToolCallBlock | CachePoint):
        return None
    raise ValueError(
        f"{type(block).__name__} content is not supported by local text models; send text only."
    )


def _legacy_tool_call(call: Any, index: int) -> dict[str, Any]:
    """An OpenAI-style tool call kept in ``additional_kwargs`` (dict or SDK object)."""
    data = call.model_dump() if hasattr(call, "model_dump") else dict(call)
    function = data.get("function") or {}
    return {
        "id": data.get("id") or f"call_{index}",
        "type": "function",
        "function": {"name": function.get("name"), "arguments": function.get("arguments") or {}},
    }


def _runtime_message(message: ChatMessage) -> dict[str, Any]:
    role = _ROLES.get(message.role, str(message.role.value))
    texts: list[str] = []
    thinking: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in message.blocks:
        text = _block_text(block)
        if text is not None:
            texts.append(text)
        elif isinstance(block, ThinkingBlock) and block.content:
            thinking.append(block.content)
        elif isinstance(block, ToolCallBlock):
            calls.append(
                {
                    "id": block.tool_call_id or f"call_{len(calls)}",
                    "type": "function",
                    "function": {"name": block.tool_name, "arguments": block.tool_kwargs},
                }
            )
    out: dict[str, Any] = {"role": role, "content": "\n".join(texts)}
    extra = message.additional_kwargs
    if role == "assistant":
        if not calls and extra.get("tool_calls"):
            calls = [_legacy_tool_call(c, i) for i, c in enumerate(extra["tool_calls"])]
        if calls:
            out["tool_calls"] = calls
        if thinking:
            out["reasoning_content"] = "".join(thinking)
    elif role == "tool":
        if extra.get("tool_call_id"):
            out["tool_call_id"] = str(extra["tool_call_id"])
        if extra.get("name"):
            out["name"] = str(extra["name"])
    return out


def to_runtime_messages(messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    """Convert LlamaIndex chat messages to the runtime's OpenAI-style dicts.

    Thinking blocks of earlier answers become ``reasoning_content`` (templates
    that know it, Qwen3's for one, use it; the others ignore it), tool-call
    blocks become ``tool_calls`` and tool results keep their ``tool_call_id``.

    Raises:
        ValueError: For image, audio, video or document blocks.
    """
    return [_runtime_message(message) for message in messages]


# ---- runtime -> LlamaIndex ----------------------------------------------------


def _final_raw(chunk: FinalChunk) -> dict[str, Any]:
    timings = chunk.timings
    return {
        "model": chunk.model,
        "done": True,
        "finish_reason": chunk.finish_reason,
        "usage": {
            "prompt_tokens": chunk.usage.prompt_tokens,
            "completion_tokens": chunk.usage.completion_tokens,
            "total_tokens": chunk.usage.total_tokens,
        },
        "timings": {
            "load_s": timings.load_s,
            "queue_s": timings.queue_s,
            "prompt_s": timings.prompt_s,
            "generation_s": timings.generation_s,
            "prompt_tokens_per_s": timings.prompt_tokens_per_s,
            "generation_tokens_per_s": timings.generation_tokens_per_s,
        },
    }


def position_logprobs(item: TokenLogprob) -> list[LogProb]:
    """One generated token as LlamaIndex's ``logprobs`` entry (a list per position).

    The generated token first, then the other most likely tokens, most likely
    first (``top_logprobs`` of them, the generated one not repeated). So
    ``response.logprobs[i][0]`` is always the token that was generated, with its
    log-probability, whether it was the most likely one or not (LlamaIndex's
    OpenAI class lists only the alternatives, losing it when it is not among them).
    """
    out = [LogProb(token=item.token, logprob=item.logprob, bytes=list(item.bytes))]
    for top in item.top_logprobs:
        if (top.token, top.bytes) != (item.token, item.bytes):
            out.append(LogProb(token=top.token, logprob=top.logprob, bytes=list(top.bytes)))
    return out


class ChatAccumulator:
    """Fold runtime chunks into LlamaIndex chat responses, one per chunk.

    Example:
        >>> acc = ChatAccumulator()
        >>> acc.feed(TextDelta("Hi")).delta
        'Hi'
        >>> acc.message().content
        'Hi'
    """

    def __init__(self) -> None:
        self._text: list[str] = []
        self._thinking: list[str] = []
        self._calls: list[ToolCallBlock] = []
        self._errors: dict[str, str] = {}
        self._raw: dict[str, Any] | None = None
        self._logprobs: list[list[LogProb]] | None = None

    def message(self) -> ChatMessage:
        """The assistant message so far: thinking, then text, then tool calls."""
        blocks: list[ContentBlock] = []
        if self._thinking:
            blocks.append(ThinkingBlock(content="".join(self._thinking)))
        text = "".join(self._text)
        if text or not (self._thinking or self._calls):
            blocks.append(TextBlock(text=text))
        blocks.extend(self._calls)
        extra = {TOOL_CALL_ERRORS: dict(self._errors)} if self._errors else {}
        return ChatMessage(role=MessageRole.ASSISTANT, blocks=blocks, additional_kwargs=extra)

    @property
    def raw(self) -> dict[str, Any] | None:
        """Model, finish reason, usage and timings once the final chunk arrived."""
        return self._raw

    def _usage_kwargs(self) -> dict[str, Any]:
        return dict(self._raw["usage"]) if self._raw else {}

    def add(self, chunk: Chunk) -> None:
        """Add one chunk (non-streaming calls: no response per chunk)."""
        if isinstance(chunk, TextDelta):
            self._text.append(chunk.text)
            if chunk.logprobs:
                self._logprobs = self._logprobs or []
                self._logprobs.extend(position_logprobs(item) for item in chunk.logprobs)
        elif isinstance(chunk, ReasoningDelta):
            self._thinking.append(chunk.text)
        elif isinstance(chunk, ToolCallDelta):
            self._calls.append(
                ToolCallBlock(
                    tool_call_id=chunk.id, tool_name=chunk.name, tool_kwargs=chunk.arguments
                )
            )
            if chunk.error is not None:
                self._errors[chunk.id] = chunk.error
        else:
            self._raw = _final_raw(chunk)

    def feed(self, chunk: Chunk) -> ChatResponse:
        """Add one chunk; return the response to stream for it.

        ``delta`` is the new answer text (``""`` for other chunks); new reasoning
        is in ``additional_kwargs["thinking_delta"]``; the response for the
        final chunk carries the usage (``raw["usage"]`` and ``additional_kwargs``).
        """
        self.add(chunk)
        extra: dict[str, Any] = {}
        if isinstance(chunk, ReasoningDelta):
            extra["thinking_delta"] = chunk.text
        elif isinstance(chunk, FinalChunk):
            extra.update(self._usage_kwargs())
        delta = chunk.text if isinstance(chunk, TextDelta) else ""
        return ChatResponse(
            message=self.message(),
            delta=delta,
            raw=self._raw,
            additional_kwargs=extra,
            logprobs=self.logprobs(),
        )

    def logprobs(self) -> list[list[LogProb]] | None:
        """The answer's tokens so far (:func:`position_logprobs`); ``None`` without any."""
        return list(self._logprobs) if self._logprobs is not None else None

    def response(self) -> ChatResponse:
        """The whole response (for non-streaming calls)."""
        return ChatResponse(
            message=self.message(),
            raw=self._raw,
            additional_kwargs=self._usage_kwargs(),
            logprobs=self.logprobs(),
        )


def chat_responses(chunks: Iterable[Chunk]) -> Iterator[ChatResponse]:
    """Stream ``ChatResponse``s for runtime chunks (one per chunk, the last with usage)."""
    accumulator = ChatAccumulator()
    for chunk in chunks:
        yield accumulator.feed(chunk)


def completion_response(response: ChatResponse) -> CompletionResponse:
    """A completion view of a chat response: answer text, thinking in ``additional_kwargs``.

    ``additional_kwargs`` holds ``thinking`` (all reasoning so far),
    ``thinking_delta`` (new reasoning, streams) and, on the last response, the
    token usage.
    """
    extra = dict(response.additional_kwargs)
    thinking = "".join(
        b.content or "" for b in response.message.blocks if isinstance(b, ThinkingBlock)
    )
    if thinking:
        extra["thinking"] = thinking
    text = "".join(b.text for b in response.message.blocks if isinstance(b, TextBlock))
    return CompletionResponse(
        text=text,
        delta=response.delta,
        raw=response.raw,
        additional_kwargs=extra,
        logprobs=response.logprobs,
    )


def tool_selections(message: ChatMessage, *, error_on_no_tool_call: bool) -> list[ToolSelection]:
    """The valid tool calls of an assistant message as LlamaIndex ``ToolSelection``s.

    A call whose arguments do not match its tool's schema (listed under
    ``additional_kwargs["tool_call_errors"]``) is never returned: with
    ``error_on_no_tool_call`` it raises, otherwise it is left out (and logged).

    Raises:
        InvalidToolCallError: A ``ValueError``: with ``error_on_no_tool_call``, if
            a call's arguments do not validate (names the tool and the error).
        ValueError: If there is no call and ``error_on_no_tool_call`` is set.
    """
    errors: Mapping[str, str] = message.additional_kwargs.get(TOOL_CALL_ERRORS) or {}
    selections: list[ToolSelection] = []
    for block in message.blocks:
        if isinstance(block, ToolCallBlock) and block.tool_call_id in errors:
            error = errors[str(block.tool_call_id)]
            if error_on_no_tool_call:
                raise InvalidToolCallError(block.tool_name, block.tool_kwargs, error)
            logger.warning(
                "Skipping the call of tool %r: its arguments do not match the schema (%s).",
                block.tool_name,
                error,
            )
        elif isinstance(block, ToolCallBlock):
            kwargs: Any = block.tool_kwargs
            if isinstance(kwargs, str):
                try:
                    kwargs = json.loads(kwargs) if kwargs.strip() else {}
                except ValueError:
                    kwargs = {}
            selections.append(
                ToolSelection(
                    tool_id=block.tool_call_id or block.tool_name,
                    tool_name=block.tool_name,
                    tool_kwargs=dict(kwargs) if isinstance(kwargs, Mapping) else {},
                )
            )
    if not selections and error_on_no_tool_call:
        raise ValueError("Expected at least one tool call, but the model called no tool.")
    return selections


def keep_first_tool_call(response: ChatResponse) -> ChatResponse:
    """Drop every tool call but the first (``allow_parallel_tool_calls=False``)."""
    seen = False
    blocks: list[ContentBlock] = []
    for block in response.message.blocks:
        if isinstance(block, ToolCallBlock):
            if seen:
                continue
            seen = True
        blocks.append(block)
    response.message.blocks = blocks
    return response
