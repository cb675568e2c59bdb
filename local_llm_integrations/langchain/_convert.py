"""Pure converters between LangChain messages and the runtime's types."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.messages.ai import UsageMetadata
from langchain_core.messages.tool import invalid_tool_call, tool_call_chunk

from local_llm_runtime.types import (
    Chunk,
    FinalChunk,
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
)

__all__ = ["final_metadata", "message_chunk", "restore_invalid_tool_calls", "to_runtime_messages"]

_ROLES = {"human": "user", "user": "user", "ai": "assistant", "assistant": "assistant",
          "system": "system", "developer": "system", "tool": "tool"}  # fmt: skip


def _text(content: str | list[Any]) -> str:
    """Flatten LangChain content (a string or content blocks) to text."""
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict):
            kind = block.get("type")
            if kind in ("text", "text-plain") or (kind is None and "text" in block):
                parts.append(str(block.get("text", "")))
            elif kind in ("tool_use", "tool_call", "reasoning", "thinking"):
                continue  # carried by tool_calls / not sent back to the model
            else:
                raise ValueError(
                    f"Content blocks of type {kind!r} are not supported by local text models; "
                    "send text only."
                )
    return "".join(parts)


def to_runtime_messages(messages: Sequence[BaseMessage]) -> list[dict[str, Any]]:
    """Convert LangChain messages to the runtime's OpenAI-style message dicts."""
    out: list[dict[str, Any]] = []
    for message in messages:
        if isinstance(message, SystemMessage):
            out.append({"role": "system", "content": _text(message.content)})
        elif isinstance(message, HumanMessage):
            item: dict[str, Any] = {"role": "user", "content": _text(message.content)}
            if message.name:
                item["name"] = message.name
            out.append(item)
        elif isinstance(message, AIMessage):
            item = {"role": "assistant", "content": _text(message.content)}
            if message.tool_calls:
                item["tool_calls"] = [
                    {
                        "id": call.get("id") or f"call_{i}",
                        "type": "function",
                        "function": {"name": call["name"], "arguments": call["args"]},
                    }
                    for i, call in enumerate(message.tool_calls)
                ]
            out.append(item)
        elif isinstance(message, ToolMessage):
            content = message.content
            text = content if isinstance(content, str) else _tool_content(content)
            item = {"role": "tool", "content": text, "tool_call_id": message.tool_call_id}
            if message.name:
                item["name"] = message.name
            out.append(item)
        elif isinstance(message, ChatMessage):
            role = _ROLES.get(message.role)
            if role is None:
                raise ValueError(f"Unsupported chat message role {message.role!r}.")
            out.append({"role": role, "content": _text(message.content)})
        else:
            raise ValueError(f"Unsupported message type {type(message).__name__}.")
    return out


def _tool_content(content: list[Any]) -> str:
    try:
        return _text(content)
    except ValueError:
        return json.dumps(content, ensure_ascii=False, default=str)


def message_chunk(chunk: Chunk) -> AIMessageChunk:
    """Convert one runtime chunk into an ``AIMessageChunk``."""
    if isinstance(chunk, TextDelta):
        return AIMessageChunk(content=chunk.text)
    if isinstance(chunk, ReasoningDelta):
        return AIMessageChunk(content="", additional_kwargs={"reasoning_content": chunk.text})
    if isinstance(chunk, ToolCallDelta) and chunk.error is not None:
        return _invalid_call_chunk(chunk, chunk.error)
    if isinstance(chunk, ToolCallDelta):
        return AIMessageChunk(
            content="",
            tool_call_chunks=[
                tool_call_chunk(
                    name=chunk.name, args=chunk.arguments_json, id=chunk.id, index=chunk.index
                )
            ],
        )
    usage, metadata = final_metadata(chunk)
    return AIMessageChunk(
        content="", usage_metadata=usage, response_metadata=metadata, chunk_position="last"
    )


def _invalid_call_chunk(chunk: ToolCallDelta, error: str) -> AIMessageChunk:
    """A chunk for a call whose arguments do not validate: never a valid ``tool_call``.

    LangChain rebuilds ``tool_calls``/``invalid_tool_calls`` from
    ``tool_call_chunks`` whenever chunks are added (``+``), and any ``args`` that
    parse as a JSON object become a valid call there. So this chunk's
    ``tool_call_chunks`` entry carries the arguments behind a ``(invalid: ...)``
    note, which does not parse: after ``+`` the call lands in
    ``invalid_tool_calls`` (LangChain sets ``error`` to ``None`` there and the note
    keeps the reason). The chunk itself, and ``invoke``'s message (see
    :func:`restore_invalid_tool_calls`), carry the plain JSON arguments and the
    ``error``.
    """
    args = chunk.arguments_json
    message = AIMessageChunk(
        content="",
        tool_call_chunks=[
            tool_call_chunk(
                name=chunk.name, args=f"(invalid: {error}) {args}", id=chunk.id, index=chunk.index
            )
        ],
    )
    message.invalid_tool_calls = [
        invalid_tool_call(name=chunk.name, args=args, id=chunk.id, error=error)
    ]
    return message


def restore_invalid_tool_calls(message: AIMessage, chunks: Sequence[AIMessageChunk]) -> None:
    """Put back the plain arguments and the ``error`` of the invalid calls in ``chunks``.

    ``message`` is the aggregate of ``chunks``; its ``invalid_tool_calls`` lost
    their ``error`` in LangChain's chunk addition (see :func:`_invalid_call_chunk`).
    """
    originals = {
        call["id"]: call for chunk in chunks for call in chunk.invalid_tool_calls if call["error"]
    }
    message.invalid_tool_calls = [
        originals.get(call["id"], call) if call["id"] is not None else call
        for call in message.invalid_tool_calls
    ]


def final_metadata(final: FinalChunk) -> tuple[UsageMetadata, dict[str, Any]]:
    """Usage and response metadata (model, finish reason, timings) of a finished request."""
    usage = UsageMetadata(  # type: ignore[typeddict-item]  # details are optional
        input_tokens=final.usage.prompt_tokens,
        output_tokens=final.usage.completion_tokens,
        total_tokens=final.usage.total_tokens,
    )
    t = final.timings
    metadata: dict[str, Any] = {
        "model_name": final.model,
        "model_provider": "local-llm",
        "finish_reason": final.finish_reason,
        "done": True,
        "load_duration_s": t.load_s,
        "queue_duration_s": t.queue_s,
        "prompt_eval_duration_s": t.prompt_s,
        "eval_duration_s": t.generation_s,
        "prompt_eval_tokens_per_s": t.prompt_tokens_per_s,
        "eval_tokens_per_s": t.generation_tokens_per_s,
    }
    return usage, metadata
