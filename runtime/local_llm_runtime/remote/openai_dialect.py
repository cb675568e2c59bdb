"""OpenAI's wire protocol, both ways, as pure functions (no I/O).

Requests: :func:`chat_body` (``/v1/chat/completions``, always streamed with
``stream_options.include_usage``), :func:`completion_body` (``/v1/completions``,
a raw continuation), :func:`embeddings_body` (``/v1/embeddings``).

Responses: :func:`apply_chat_event` / :func:`apply_completion_event` feed one
SSE ``data:`` object into an :class:`~local_llm_runtime.remote.chunks.Assembler`:
``delta.content`` -> text; ``delta.reasoning_content`` (DeepSeek, vLLM,
llama-server, ``local-llm serve``) or ``delta.reasoning`` (vLLM >= 0.10, OpenRouter)
-> reasoning; ``delta.tool_calls`` fragments, assembled by ``index``; the last
object's ``usage`` (``choices: []``). :func:`models_of` reads ``/v1/models``
(ids and, where the server says, the context window: vLLM ``max_model_len``,
llama-server ``meta.n_ctx_train``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from local_llm_runtime.logprobs import token_logprob_of
from local_llm_runtime.remote.chunks import Assembler
from local_llm_runtime.remote.options_map import logprob_fields, openai_sampling
from local_llm_runtime.types import Chunk, TokenLogprob, ToolChoice, TopLogprob

__all__ = [
    "ServedModel",
    "apply_chat_event",
    "apply_completion_event",
    "chat_body",
    "completion_body",
    "embeddings_body",
    "embeddings_of",
    "event_error",
    "legacy_logprobs",
    "models_of",
    "response_format",
    "tool_choice_field",
    "wire_messages",
]


@dataclass(frozen=True)
class ServedModel:
    """One model a server lists."""

    id: str
    context_length: int | None = None


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, Mapping))
    return "" if content is None else str(content)


def wire_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The runtime's messages as OpenAI sends them (tool-call arguments as JSON text)."""
    out: list[dict[str, Any]] = []
    for message in messages:
        item = {k: v for k, v in message.items() if k != "thinking"}
        calls = message.get("tool_calls")
        if calls:
            wired = []
            for i, call in enumerate(calls):
                function = call.get("function", call)
                arguments = function.get("arguments", {})
                wired.append(
                    {
                        "id": call.get("id") or f"call_{i}",
                        "type": "function",
                        "function": {
                            "name": function.get("name", ""),
                            "arguments": arguments
                            if isinstance(arguments, str)
                            else json.dumps(arguments, ensure_ascii=False),
                        },
                    }
                )
            item["tool_calls"] = wired
            if item.get("content") is None:
                item["content"] = ""
        out.append(item)
    return out


def tool_choice_field(choice: ToolChoice) -> str | dict[str, Any]:
    """OpenAI's ``tool_choice`` for the runtime's (``any`` -> ``required``; a name -> object)."""
    if choice in ("auto", "none", "required"):
        return choice
    if choice == "any":
        return "required"
    return {"type": "function", "function": {"name": choice}}


def response_format(format: Mapping[str, Any] | str) -> dict[str, Any]:
    """``response_format`` for a JSON schema (``json_schema``) or ``"json"`` (``json_object``)."""
    if isinstance(format, str):
        return {"type": "json_object"}
    return {
        "type": "json_schema",
        "json_schema": {"name": "response", "schema": dict(format), "strict": True},
    }


def chat_body(
    model: str,
    messages: Sequence[Mapping[str, Any]],
    *,
    tools: Sequence[Mapping[str, Any]] | None = None,
    tool_choice: ToolChoice = "auto",
    parallel_tool_calls: bool = True,
    format: Mapping[str, Any] | str | None = None,
    options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A streamed ``/v1/chat/completions`` body (checked options, see :mod:`.options_map`)."""
    body: dict[str, Any] = {
        "model": model,
        "messages": wire_messages(messages),
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if tools:
        body["tools"] = [dict(t) for t in tools]
        if tool_choice != "auto":
            body["tool_choice"] = tool_choice_field(tool_choice)
        if not parallel_tool_calls:
            body["parallel_tool_calls"] = False
    if format is not None:
        body["response_format"] = response_format(format)
    body.update(openai_sampling(options or {}))
    body.update(logprob_fields(options or {}))
    return body


def completion_body(
    model: str, prompt: str, *, options: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A streamed ``/v1/completions`` body: the prompt continued as is."""
    body: dict[str, Any] = {
        "model": model,
        "prompt": prompt,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    body.update(openai_sampling(options or {}))
    body.update(logprob_fields(options or {}, legacy=True))
    return body


def embeddings_body(model: str, texts: Sequence[str]) -> dict[str, Any]:
    """A ``/v1/embeddings`` body (floats)."""
    return {"model": model, "input": list(texts), "encoding_format": "float"}


def embeddings_of(body: Mapping[str, Any], expected: int) -> list[list[float]]:
    """The vectors of a ``/v1/embeddings`` answer, ordered by ``index``.

    Raises:
        ValueError: When the server answered another number of vectors.
    """
    data = sorted(body.get("data") or [], key=lambda item: int(item.get("index", 0)))
    vectors = [[float(x) for x in item["embedding"]] for item in data]
    if len(vectors) != expected:
        raise ValueError(f"the server answered {len(vectors)} vectors for {expected} texts")
    return vectors


def event_error(data: Mapping[str, Any]) -> str | None:
    """The message of an error sent inside a stream (``{"error": ...}``), else ``None``."""
    error = data.get("error")
    if error is None:
        return None
    if isinstance(error, Mapping):
        return str(error.get("message") or error)
    return str(error)


def _usage(assembler: Assembler, data: Mapping[str, Any]) -> None:
    usage = data.get("usage")
    if isinstance(usage, Mapping) and usage.get("prompt_tokens") is not None:
        assembler.usage(
            int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
        )


def apply_chat_event(assembler: Assembler, data: Mapping[str, Any]) -> list[Chunk]:
    """Feed one ``chat.completion.chunk`` object; return the chunks now ready."""
    out: list[Chunk] = []
    for choice in data.get("choices") or ():
        delta = choice.get("delta") or choice.get("message") or {}
        logprobs = choice.get("logprobs")
        if isinstance(logprobs, Mapping):
            items = (
                token_logprob_of(i) for i in logprobs.get("content") or () if isinstance(i, Mapping)
            )
            assembler.logprobs([item for item in items if item is not None])
        for key in ("reasoning_content", "reasoning"):
            value = delta.get(key)
            if isinstance(value, str):
                out += assembler.reasoning_text(value)
        content = delta.get("content")
        if isinstance(content, str):
            out += assembler.text(content)
        for i, call in enumerate(delta.get("tool_calls") or ()):
            function = call.get("function") or {}
            assembler.tool_fragment(
                int(call.get("index", i)),
                id=call.get("id"),
                name=function.get("name"),
                arguments=function.get("arguments"),
            )
        assembler.finish(choice.get("finish_reason"))
    _usage(assembler, data)
    return out


def apply_completion_event(assembler: Assembler, data: Mapping[str, Any]) -> list[Chunk]:
    """Feed one ``text_completion`` object; return the chunks now ready."""
    out: list[Chunk] = []
    for choice in data.get("choices") or ():
        logprobs = choice.get("logprobs")
        if isinstance(logprobs, Mapping):
            assembler.logprobs(legacy_logprobs(logprobs))
        text = choice.get("text")
        if isinstance(text, str):
            out += assembler.text(text)
        assembler.finish(choice.get("finish_reason"))
    _usage(assembler, data)
    return out


def legacy_logprobs(data: Mapping[str, Any]) -> list[TokenLogprob]:
    """The tokens of a legacy completion ``logprobs`` object, alternatives most likely first.

    The object has ``tokens``, ``token_logprobs`` and ``top_logprobs`` (``{token:
    logprob}`` maps), as OpenAI's legacy completions, vLLM and llama-server send it.
    """
    tokens = data.get("tokens") or []
    values = data.get("token_logprobs") or []
    tops = data.get("top_logprobs") or []
    out = []
    for i, token in enumerate(tokens):
        value = values[i] if i < len(values) else None
        if not isinstance(token, str) or not isinstance(value, int | float):
            continue
        top = tops[i] if i < len(tops) and isinstance(tops[i], Mapping) else {}
        ranked = sorted(
            ((str(t), float(v)) for t, v in top.items() if isinstance(v, int | float)),
            key=lambda pair: -pair[1],
        )
        alternatives = tuple(TopLogprob(t, v, tuple(t.encode("utf-8"))) for t, v in ranked)
        out.append(TokenLogprob(token, float(value), tuple(token.encode("utf-8")), alternatives))
    return out


def _positive(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def models_of(body: Mapping[str, Any]) -> list[ServedModel]:
    """The models of a ``/v1/models`` answer, with their context window where known."""
    out = []
    for item in body.get("data") or ():
        if not isinstance(item, Mapping) or not isinstance(item.get("id"), str):
            continue
        meta = item.get("meta") if isinstance(item.get("meta"), Mapping) else {}
        context = (
            _positive(item.get("max_model_len"))
            or _positive(item.get("context_length"))
            or _positive(meta.get("n_ctx_train"))  # type: ignore[union-attr]
            or _positive(meta.get("n_ctx"))  # type: ignore[union-attr]
        )
        out.append(ServedModel(item["id"], context))
    return out
