"""Ollama's native API, both ways, as pure functions (no I/O).

Requests: :func:`chat_body` (``/api/chat``), :func:`generate_body`
(``/api/generate``), :func:`embed_body` (``/api/embed``); options go in
``options`` as the runtime names them (they are Ollama's names). Ollama has no
``tool_choice``: it is not sent, and the engine checks a forced call afterwards.

Responses: :func:`apply_line` feeds one NDJSON object into an
:class:`~local_llm_runtime.remote.chunks.Assembler`: ``message.content`` /
``response`` -> text, ``message.thinking`` / ``thinking`` -> reasoning,
``message.tool_calls`` (whole calls, arguments as objects), ``logprobs`` (the
tokens of that object, when the request asked), and on the last
object (``done: true``) ``done_reason``, the token counts and the durations.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from local_llm_runtime.logprobs import token_logprob_of
from local_llm_runtime.remote.chunks import Assembler
from local_llm_runtime.remote.options_map import logprob_fields, ollama_options
from local_llm_runtime.types import Chunk, Timings

__all__ = [
    "apply_line",
    "chat_body",
    "context_length_of",
    "embed_body",
    "generate_body",
    "model_names_of",
    "wire_messages",
]

_NS = 1e-9


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, Mapping))
    return ""


def wire_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The runtime's messages as Ollama takes them (text content, argument objects)."""
    out: list[dict[str, Any]] = []
    names: dict[str, str] = {}
    for message in messages:
        role = message.get("role")
        item: dict[str, Any] = {"role": role, "content": _text_of(message.get("content"))}
        calls = message.get("tool_calls")
        if calls:
            wired = []
            for call in calls:
                function = call.get("function", call)
                arguments = function.get("arguments", {})
                if isinstance(arguments, str):
                    try:
                        arguments = json.loads(arguments) if arguments.strip() else {}
                    except ValueError:
                        arguments = {}
                entry: dict[str, Any] = {
                    "function": {"name": function.get("name", ""), "arguments": arguments}
                }
                if call.get("id"):
                    entry["id"] = call["id"]
                    names[str(call["id"])] = str(function.get("name", ""))
                wired.append(entry)
            item["tool_calls"] = wired
        if role == "tool":
            call_id = message.get("tool_call_id")
            if call_id:
                item["tool_call_id"] = str(call_id)
            name = message.get("tool_name") or message.get("name") or names.get(str(call_id))
            if name:
                item["tool_name"] = str(name)
        out.append(item)
    return out


def _common(
    body: dict[str, Any],
    format: Mapping[str, Any] | str | None,
    options: Mapping[str, Any] | None,
    keep_alive: float | str | None,
) -> dict[str, Any]:
    if format is not None:
        body["format"] = "json" if isinstance(format, str) else dict(format)
    wired = ollama_options(options or {})
    if wired:
        body["options"] = wired
    body.update(logprob_fields(options or {}))
    if keep_alive is not None:
        body["keep_alive"] = keep_alive
    return body


def chat_body(
    model: str,
    messages: Sequence[Mapping[str, Any]],
    *,
    tools: Sequence[Mapping[str, Any]] | None = None,
    format: Mapping[str, Any] | str | None = None,
    options: Mapping[str, Any] | None = None,
    keep_alive: float | str | None = None,
) -> dict[str, Any]:
    """A streamed ``/api/chat`` body (no ``tool_choice``: Ollama has none)."""
    body: dict[str, Any] = {"model": model, "messages": wire_messages(messages), "stream": True}
    if tools:
        body["tools"] = [dict(t) for t in tools]
    return _common(body, format, options, keep_alive)


def generate_body(
    model: str,
    prompt: str,
    *,
    system: str | None = None,
    raw: bool = False,
    format: Mapping[str, Any] | str | None = None,
    options: Mapping[str, Any] | None = None,
    keep_alive: float | str | None = None,
) -> dict[str, Any]:
    """A streamed ``/api/generate`` body."""
    body: dict[str, Any] = {"model": model, "prompt": prompt, "stream": True}
    if system is not None:
        body["system"] = system
    if raw:
        body["raw"] = True
    return _common(body, format, options, keep_alive)


def embed_body(
    model: str, texts: Sequence[str], *, keep_alive: float | str | None = None
) -> dict[str, Any]:
    """An ``/api/embed`` body (a list of texts: one vector each)."""
    body: dict[str, Any] = {"model": model, "input": list(texts)}
    if keep_alive is not None:
        body["keep_alive"] = keep_alive
    return body


def apply_line(assembler: Assembler, data: Mapping[str, Any]) -> list[Chunk]:
    """Feed one NDJSON object of ``/api/chat`` or ``/api/generate``; return the ready chunks."""
    out: list[Chunk] = []
    message = data.get("message") if isinstance(data.get("message"), Mapping) else data
    assert isinstance(message, Mapping)
    items = (token_logprob_of(i) for i in data.get("logprobs") or () if isinstance(i, Mapping))
    assembler.logprobs([item for item in items if item is not None])
    thinking = message.get("thinking")
    if isinstance(thinking, str):
        out += assembler.reasoning_text(thinking)
    text = message.get("content", message.get("response"))
    if isinstance(text, str):
        out += assembler.text(text)
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        arguments = function.get("arguments")
        index = function.get("index")
        assembler.tool_fragment(
            int(index) if isinstance(index, int) else assembler.calls,
            id=call.get("id"),
            name=function.get("name"),
            arguments=arguments if isinstance(arguments, Mapping | str) else {},
        )
    if data.get("done"):
        assembler.ended()
        assembler.finish(data.get("done_reason"))
        if data.get("prompt_eval_count") is not None or data.get("eval_count") is not None:
            prompt = int(data.get("prompt_eval_count") or 0)
            completion = int(data.get("eval_count") or 0)
            assembler.usage(prompt, completion)
            assembler.timings(
                Timings(
                    load_s=int(data.get("load_duration") or 0) * _NS,
                    queue_s=0.0,
                    prompt_s=int(data.get("prompt_eval_duration") or 0) * _NS,
                    generation_s=int(data.get("eval_duration") or 0) * _NS,
                    prompt_tokens=prompt,
                    sampled_tokens=completion,
                )
            )
    return out


def model_names_of(body: Mapping[str, Any]) -> list[str]:
    """The model names of an ``/api/tags`` (or ``/api/ps``) answer."""
    out = []
    for item in body.get("models") or ():
        if isinstance(item, Mapping):
            name = item.get("model") or item.get("name")
            if isinstance(name, str):
                out.append(name)
    return out


def context_length_of(show: Mapping[str, Any]) -> int | None:
    """``{arch}.context_length`` of an ``/api/show`` answer."""
    info = show.get("model_info")
    if not isinstance(info, Mapping):
        return None
    for key, value in info.items():
        if str(key).endswith(".context_length") and isinstance(value, int) and value > 0:
            return value
    return None
