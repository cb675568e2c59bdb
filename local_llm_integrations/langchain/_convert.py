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
from langchain_core.messages.tool import tool_call_chunk

from local_llm_runtime.types import (
    Chunk,
    FinalChunk,
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
)

__all__ = ["final_metadata", "message_chunk", "to_runtime_messages"]

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
