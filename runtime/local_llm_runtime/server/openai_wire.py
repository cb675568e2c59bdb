"""OpenAI's wire format: request models, and runtime chunks to OpenAI objects (pure, no I/O).

Shapes follow OpenAI's API reference (``/v1/chat/completions``,
``/v1/completions``, ``/v1/embeddings``, ``/v1/models``) as the official
``openai`` SDK 2.x types declare them. Nothing here touches the network, the
engine or the event loop: :mod:`local_llm_runtime.server.openai_api` parses a
request with these models, calls the engine with :func:`chat_arguments` /
:func:`completion_arguments`, and turns what the engine streams into wire
objects with :class:`ChatChunker`, :func:`chat_completion`,
:class:`CompletionChunker`, :func:`text_completion` and :func:`embedding_list`.

Request fields come in three kinds:

* mapped to the engine: ``messages``, ``tools``, ``tool_choice`` (grammar-enforced:
  ``required`` or a named function forces a call, which Ollama ignores),
  ``parallel_tool_calls``, ``response_format`` (``json_object`` -> any JSON,
  ``json_schema`` -> its schema), ``stop``, ``seed``, ``max_tokens`` /
  ``max_completion_tokens`` (-> ``num_predict``), ``temperature``, ``top_p``,
  ``frequency_penalty``, ``presence_penalty``, ``logprobs``/``top_logprobs``
  (chat: ``choices[].logprobs.content``; completions' legacy ``logprobs`` number:
  ``{tokens, token_logprobs, top_logprobs, text_offset}``, streamed chunks too);
  our extras, as llama-server and vLLM accept them: ``top_k``, ``min_p``,
  ``repeat_penalty``;
* accepted and ignored, having no effect on a local model: ``user``,
  ``metadata``, ``store``, ``service_tier``, ``prompt_cache_key``,
  ``prompt_cache_retention``, ``safety_identifier``, ``reasoning_effort``,
  ``verbosity``, ``logit_bias`` when empty, ``modalities`` ``["text"]``,
  ``n`` 1;
* refused with a 400 naming the field: ``n`` > 1, ``top_logprobs`` above 0
  without ``logprobs``, ``logit_bias``, ``audio``, ``prediction``,
  ``web_search_options``, the legacy ``functions``/``function_call``,
  image/audio/file content parts (the runtime is text only), and any field
  OpenAI does not define (a typo is an error, not a silent default).

Reasoning text (a ``<think>`` block) is sent as ``reasoning_content``, as
DeepSeek's API, vLLM and llama-server do. A tool call whose arguments do not
validate against the tool's schema (rare: arguments are grammar-constrained) is
sent as a normal tool call, as OpenAI's API does for non-strict tools: the
client sees exactly what the model produced and decides (LangChain and the
SDK's ``parse`` validate arguments themselves). A generation the server
cancelled (shutdown) ends with ``finish_reason`` ``length``: the answer is
incomplete, and clients that need it whole (``parse``) say so instead of
failing on half a JSON document.
"""

from __future__ import annotations

import base64
import json
import struct
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from local_llm_runtime.errors import InvalidOptionError, UnknownOptionError
from local_llm_runtime.interface import JsonFormat
from local_llm_runtime.logprobs import LegacyLogprobs, token_logprob_object
from local_llm_runtime.numbers import NotBoolFloat, NotBoolInt
from local_llm_runtime.options import validate_options
from local_llm_runtime.server.errors import HTTPError
from local_llm_runtime.server.model_names import ModelName
from local_llm_runtime.server.vectors import shorten
from local_llm_runtime.types import (
    ChatResult,
    Chunk,
    FinalChunk,
    FinishReason,
    ReasoningDelta,
    TextDelta,
    TokenLogprob,
    ToolCallDelta,
    ToolChoice,
    Usage,
)

__all__ = [
    "SYSTEM_FINGERPRINT",
    "ChatArguments",
    "ChatChunker",
    "ChatCompletionRequest",
    "CompletionArguments",
    "CompletionChunker",
    "CompletionRequest",
    "EmbeddingRequest",
    "chat_arguments",
    "chat_completion",
    "completion_arguments",
    "embedding_inputs",
    "embedding_list",
    "finish_reason",
    "model_object",
    "new_id",
    "text_completion",
    "usage_object",
]

SYSTEM_FINGERPRINT = "fp_local_llm"
"""``system_fingerprint`` of every response (Ollama sends ``fp_ollama``)."""

_STRICT = ConfigDict(extra="forbid")


class _Wire(BaseModel):
    model_config = _STRICT


# ---- requests ----------------------------------------------------------------------


class StreamOptions(_Wire):
    """``stream_options``: ``include_usage`` adds a last chunk with the usage."""

    include_usage: bool | None = None
    include_obfuscation: bool | None = None
    """OpenAI's padding of stream chunks; nothing to hide on loopback: ignored."""


class FunctionCall(_Wire):
    name: str
    arguments: str | dict[str, Any] = ""


class ToolCall(_Wire):
    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(_Wire):
    """One chat message, any role (fields of every role of OpenAI's message union)."""

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    refusal: str | None = None
    reasoning_content: str | None = None
    """Reasoning of an earlier assistant turn, as this server sent it (dropped)."""
    annotations: list[Any] | None = None
    """Sent back by clients echoing a whole earlier response (ignored)."""
    audio: None = None
    function_call: None = None


class FunctionDefinition(_Wire):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(_Wire):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(_Wire):
    name: str


class NamedToolChoice(_Wire):
    type: Literal["function"]
    function: NamedFunction


class JsonSchemaFormat(_Wire):
    name: str = "response"
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormatText(_Wire):
    type: Literal["text"]


class ResponseFormatJsonObject(_Wire):
    type: Literal["json_object"]


class ResponseFormatJsonSchema(_Wire):
    type: Literal["json_schema"]
    json_schema: JsonSchemaFormat


ResponseFormat = Annotated[
    ResponseFormatText | ResponseFormatJsonObject | ResponseFormatJsonSchema,
    Field(discriminator="type"),
]


class _Sampling(_Wire):
    """Fields both generation endpoints share (OpenAI's ranges; our extras last)."""

    model: ModelName
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: NotBoolInt | None = None
    max_tokens: NotBoolInt | None = Field(default=None, ge=1)
    temperature: NotBoolFloat | None = Field(default=None, ge=0.0, le=2.0)
    top_p: NotBoolFloat | None = Field(default=None, ge=0.0, le=1.0)
    frequency_penalty: NotBoolFloat | None = Field(default=None, ge=-2.0, le=2.0)
    presence_penalty: NotBoolFloat | None = Field(default=None, ge=-2.0, le=2.0)
    n: NotBoolInt | None = Field(default=None, ge=1)
    logit_bias: dict[str, float] | None = None
    user: str | None = None
    metadata: dict[str, str] | None = None
    service_tier: str | None = None
    # extras (llama-server / vLLM names), Ollama's options of the same name
    top_k: NotBoolInt | None = None
    min_p: NotBoolFloat | None = None
    repeat_penalty: NotBoolFloat | None = None


class ChatCompletionRequest(_Sampling):
    """``POST /v1/chat/completions`` body (every field OpenAI documents; see the module doc)."""

    messages: list[Message] = Field(min_length=1)
    tools: list[Tool] | None = None
    tool_choice: Literal["auto", "none", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    max_completion_tokens: NotBoolInt | None = Field(default=None, ge=1)
    logprobs: bool | None = None
    top_logprobs: NotBoolInt | None = None
    store: bool | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: str | None = None
    safety_identifier: str | None = None
    reasoning_effort: str | None = None
    verbosity: str | None = None
    modalities: list[str] | None = None
    audio: dict[str, Any] | None = None
    prediction: dict[str, Any] | None = None
    web_search_options: dict[str, Any] | None = None
    functions: list[dict[str, Any]] | None = None
    function_call: str | dict[str, Any] | None = None


class CompletionRequest(_Sampling):
    """``POST /v1/completions`` body (legacy completions: a raw continuation of ``prompt``)."""

    prompt: str | list[str] | list[int] | list[list[int]]
    echo: bool | None = None
    suffix: str | None = None
    best_of: NotBoolInt | None = None
    logprobs: NotBoolInt | None = None


class EmbeddingRequest(_Wire):
    """``POST /v1/embeddings`` body."""

    model: ModelName
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: NotBoolInt | None = Field(default=None, ge=1)
    user: str | None = None


# ---- request -> engine -------------------------------------------------------------


@dataclass
class ChatArguments:
    """What the engine's ``chat_stream`` gets for one request."""

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None = None
    tool_choice: ToolChoice = "auto"
    parallel_tool_calls: bool = True
    format: JsonFormat | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class CompletionArguments:
    """What the engine's ``generate_stream`` gets (``raw=True``)."""

    prompt: str
    options: dict[str, Any] = field(default_factory=dict)


def _refuse(param: str, message: str) -> HTTPError:
    return HTTPError(400, f"{param}: {message}", param=param, code="unsupported_parameter")


def _common_checks(req: _Sampling) -> None:
    if req.n is not None and req.n != 1:
        raise _refuse("n", "only n=1 is supported (one choice per request); send n requests.")
    if req.logit_bias:
        raise _refuse("logit_bias", "logit_bias is not supported by this server.")
    if req.stream_options is not None and not req.stream:
        raise HTTPError(
            400,
            "stream_options: only allowed when stream is true",
            param="stream_options",
        )


# OpenAI field -> Ollama option of the engine
_OPTION_NAMES: tuple[tuple[str, str], ...] = (
    ("temperature", "temperature"),
    ("top_p", "top_p"),
    ("frequency_penalty", "frequency_penalty"),
    ("presence_penalty", "presence_penalty"),
    ("seed", "seed"),
    ("top_k", "top_k"),
    ("min_p", "min_p"),
    ("repeat_penalty", "repeat_penalty"),
)


def _options(req: _Sampling, max_tokens: tuple[str, int | None]) -> dict[str, Any]:
    """The engine options of a request, each checked by the runtime (400 naming the field)."""
    pairs: list[tuple[str, str, Any]] = [
        (wire, option, getattr(req, wire)) for wire, option in _OPTION_NAMES
    ]
    pairs.append((max_tokens[0], "num_predict", max_tokens[1]))
    if req.stop is not None:
        stops = [req.stop] if isinstance(req.stop, str) else list(req.stop)
        pairs.append(("stop", "stop", [s for s in stops if s]))
    options: dict[str, Any] = {}
    for wire, option, value in pairs:
        if value is None:
            continue
        try:
            options.update(validate_options({option: value}))
        except (InvalidOptionError, UnknownOptionError) as exc:
            raise HTTPError(400, f"{wire}: {exc}", param=wire) from None
    return options


def _logprob_options(
    logprobs: bool | None, top_logprobs: int | None, *, legacy: bool = False
) -> dict[str, Any]:
    """``logprobs``/``top_logprobs`` as engine options (400 naming the field when invalid).

    OpenAI's rule: ``top_logprobs`` above 0 needs ``logprobs: true``; 0 to 20
    alternatives. The legacy completions ``logprobs`` is the number of alternatives.
    """
    given = {"logprobs": logprobs, "top_logprobs": top_logprobs}
    try:
        checked = validate_options({k: v for k, v in given.items() if v is not None})
    except (InvalidOptionError, UnknownOptionError) as exc:
        param = "logprobs" if legacy or "top_logprobs" not in str(exc) else "top_logprobs"
        raise HTTPError(400, f"{param}: {exc}", param=param) from None
    return checked if checked.get("logprobs") else {}  # false: nothing to ask the engine


def _content(index: int, content: str | list[dict[str, Any]] | None) -> Any:
    if not isinstance(content, list):
        return content
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        where = f"messages.{index}.content.{j}"
        kind = part.get("type")
        if kind == "text" and isinstance(part.get("text"), str):
            parts.append({"type": "text", "text": part["text"]})
        elif kind in ("image_url", "input_image", "input_audio", "file"):
            raise HTTPError(
                400,
                f"{where}: {kind} parts are not supported: this server runs text-only "
                "models (no vision or audio); send text parts or a string.",
                param=where,
                code="unsupported_content",
            )
        else:
            raise HTTPError(
                400,
                f"{where}: expected a content part such as "
                f'{{"type": "text", "text": "..."}}, got type {kind!r}',
                param=where,
            )
    return parts


def _messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        if message.role == "function":
            raise _refuse(
                f"messages.{i}.role",
                "the legacy 'function' role is not supported; use role 'tool' with tool_call_id.",
            )
        item: dict[str, Any] = {
            "role": "system" if message.role == "developer" else message.role,
            "content": _content(i, message.content),
        }
        if message.name is not None:
            item["name"] = message.name
        if message.tool_calls:
            for j, call in enumerate(message.tool_calls):
                _check_arguments_depth(call.function.arguments, f"messages.{i}.tool_calls.{j}")
            item["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.function.name, "arguments": call.function.arguments},
                }
                for call in message.tool_calls
            ]
        if message.tool_call_id is not None:
            item["tool_call_id"] = message.tool_call_id
        out.append(item)
    return out


def _check_arguments_depth(arguments: str | dict[str, Any], where: str) -> None:
    """400 when a JSON-string ``arguments`` nests deeper than a body may (see ``parse_body``)."""
    from local_llm_runtime.server.streaming import MAX_JSON_DEPTH, nests_deeper

    if not isinstance(arguments, str):
        return
    try:
        too_deep = nests_deeper(json.loads(arguments))
    except RecursionError:
        too_deep = True
    except ValueError:
        return  # not JSON: the engine reports it as it does in-process
    if too_deep:
        param = f"{where}.function.arguments"
        message = f"{param}: its JSON nests more than {MAX_JSON_DEPTH} levels deep"
        raise HTTPError(400, message, param=param)


def _response_format(fmt: Any) -> JsonFormat | None:
    if fmt is None or isinstance(fmt, ResponseFormatText):
        return None
    if isinstance(fmt, ResponseFormatJsonObject):
        return "json"
    schema = fmt.json_schema.schema_
    return "json" if schema is None else schema  # the engine checks the schema


def _tool_choice(req: ChatCompletionRequest, names: list[str]) -> ToolChoice:
    choice = req.tool_choice
    if choice is None:
        return "auto"
    if isinstance(choice, NamedToolChoice):
        name = choice.function.name
        if name not in names:
            offered = ", ".join(names) or "none"
            raise HTTPError(
                400,
                f"tool_choice: names function {name!r}, which is not in tools (offered: {offered})",
                param="tool_choice",
            )
        return name
    if choice == "required" and not names:
        raise HTTPError(
            400, "tool_choice: 'required' needs at least one tool in tools", param="tool_choice"
        )
    return choice


def chat_arguments(req: ChatCompletionRequest) -> ChatArguments:
    """The engine arguments of a chat request.

    Raises:
        HTTPError: 400 naming the field for what this server cannot do (see the module doc).
    """
    _common_checks(req)
    for name in ("audio", "prediction", "web_search_options"):
        if getattr(req, name) is not None:
            raise _refuse(name, f"{name} is not supported by this server.")
    if req.modalities is not None and set(req.modalities) - {"text"}:
        raise _refuse("modalities", "only the text modality is supported.")
    if req.functions is not None or req.function_call is not None:
        which = "functions" if req.functions is not None else "function_call"
        raise _refuse(which, "the legacy functions API is not supported; use tools/tool_choice.")
    if req.max_tokens is not None and req.max_completion_tokens is not None:
        raise HTTPError(
            400,
            "max_tokens: give max_tokens or max_completion_tokens, not both",
            param="max_tokens",
        )
    limit = (
        ("max_completion_tokens", req.max_completion_tokens)
        if req.max_completion_tokens is not None
        else ("max_tokens", req.max_tokens)
    )
    tools = [tool.model_dump(exclude_none=True) for tool in req.tools] if req.tools else None
    names = [tool.function.name for tool in req.tools or ()]
    return ChatArguments(
        messages=_messages(req.messages),
        tools=tools,
        tool_choice=_tool_choice(req, names),
        parallel_tool_calls=req.parallel_tool_calls is not False,
        format=_response_format(req.response_format),
        options={**_options(req, limit), **_logprob_options(req.logprobs, req.top_logprobs)},
    )


def completion_arguments(req: CompletionRequest) -> CompletionArguments:
    """The engine arguments of a (legacy) completion request.

    Raises:
        HTTPError: 400 naming the field: token-id prompts, several prompts, ``echo``,
            ``suffix``, ``best_of`` > 1, ``n`` > 1, ``logprobs`` above 20.
    """
    _common_checks(req)
    if req.echo:
        raise _refuse("echo", "echo is not supported by this server.")
    if req.suffix:
        raise _refuse("suffix", "suffix (fill-in-the-middle) is not supported by this server.")
    if req.best_of is not None and req.best_of != 1:
        raise _refuse("best_of", "only best_of=1 is supported.")
    prompt = req.prompt
    if isinstance(prompt, list):
        if len(prompt) != 1 or not isinstance(prompt[0], str):
            raise _refuse(
                "prompt",
                "give one prompt as a string (or a list of one string); token-id prompts "
                "and batches are not supported.",
            )
        prompt = prompt[0]
    options = _options(req, ("max_tokens", req.max_tokens))
    if req.logprobs is not None:  # legacy: the number of alternatives asks for logprobs
        options.update(_logprob_options(True, req.logprobs, legacy=True))
    return CompletionArguments(prompt=prompt, options=options)


def embedding_inputs(req: EmbeddingRequest) -> list[str]:
    """The texts of an embedding request (a string is one text).

    Raises:
        HTTPError: 400 on token-id inputs or an empty list (``param`` ``input``).
    """
    data = req.input
    if isinstance(data, str):
        return [data]
    if not data:
        raise HTTPError(400, "input: give at least one text", param="input")
    if not all(isinstance(item, str) for item in data):
        raise _refuse(
            "input",
            "token-id inputs are not supported: send strings (LangChain's OpenAIEmbeddings "
            "needs check_embedding_ctx_length=False).",
        )
    return [item for item in data if isinstance(item, str)]


# ---- engine -> wire ---------------------------------------------------------------


def new_id(prefix: str) -> str:
    """A response id such as ``chatcmpl-<hex>`` (``cmpl-`` for completions)."""
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    """``created``: Unix seconds."""
    return int(time.time())


def finish_reason(reason: FinishReason) -> str:
    """OpenAI's ``finish_reason`` of the engine's (``cancelled`` -> ``length``: cut short)."""
    return "length" if reason == "cancelled" else reason


def usage_object(usage: Usage) -> dict[str, int]:
    """``usage``: prompt, completion and total tokens."""
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


def _tool_call(call: ToolCallDelta) -> dict[str, Any]:
    return {
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments_json},
    }


def _content_logprobs(items: Sequence[TokenLogprob]) -> dict[str, Any]:
    """``choices[].logprobs`` of a chat answer: its tokens (``refusal``: none)."""
    return {"content": [token_logprob_object(item) for item in items], "refusal": None}


def chat_completion(
    result: ChatResult, *, id: str, created: int, model: str, logprobs: bool = False
) -> dict[str, Any]:
    """A whole ``chat.completion`` object from the engine's aggregated result.

    ``logprobs``: the request asked for them (``choices[].logprobs.content``; else ``null``).
    """
    calls = sorted(result.tool_calls + result.invalid_tool_calls, key=lambda c: c.index)
    message: dict[str, Any] = {
        "role": "assistant",
        "content": result.text if result.text or not calls else None,
        "refusal": None,
    }
    if calls:
        message["tool_calls"] = [_tool_call(call) for call in calls]
    if result.reasoning:
        message["reasoning_content"] = result.reasoning
    return {
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": _content_logprobs(result.logprobs) if logprobs else None,
                "finish_reason": finish_reason(result.finish_reason),
            }
        ],
        "usage": usage_object(result.usage),
    }


@dataclass
class ChatChunker:
    """Engine chunks to ``chat.completion.chunk`` objects, for one streamed response.

    The first object carries ``role: assistant`` in its delta; a tool call is one
    delta with its ``index``, ``id``, ``type`` and whole ``arguments`` (clients
    accumulate by index); the :class:`FinalChunk` gives a chunk with an empty
    delta and ``finish_reason``, then, with ``include_usage``, one with
    ``choices: []`` and ``usage`` (every earlier chunk then has ``usage: null``).
    With ``logprobs`` each content chunk carries its tokens in ``choices[].logprobs``.
    """

    model: str
    include_usage: bool = False
    logprobs: bool = False
    id: str = field(default_factory=lambda: new_id("chatcmpl"))
    created: int = field(default_factory=now)
    _started: bool = False
    _calls: int = 0

    def _chunk(
        self,
        delta: dict[str, Any],
        finish: str | None = None,
        logprobs: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        if not self._started:
            delta = {"role": "assistant", **delta}
            self._started = True
        obj: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": [
                {"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
            ],
        }
        if self.include_usage:
            obj["usage"] = None
        return obj

    def convert(self, chunk: Chunk) -> list[dict[str, Any]]:
        """The wire objects of one engine chunk (none for an empty text delta)."""
        if isinstance(chunk, TextDelta):
            if not chunk.text:
                return []
            logprobs = _content_logprobs(chunk.logprobs) if self.logprobs else None
            return [self._chunk({"content": chunk.text}, logprobs=logprobs)]
        if isinstance(chunk, ReasoningDelta):
            return [self._chunk({"reasoning_content": chunk.text})] if chunk.text else []
        if isinstance(chunk, ToolCallDelta):
            call = {"index": self._calls, **_tool_call(chunk)}
            self._calls += 1
            return [self._chunk({"tool_calls": [call]})]
        return self._final(chunk)

    def _final(self, chunk: FinalChunk) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if not self._started:  # an empty answer still announces the role
            out.append(self._chunk({"content": ""}))
        out.append(self._chunk({}, finish_reason(chunk.finish_reason)))
        if self.include_usage:
            out.append(
                {
                    "id": self.id,
                    "object": "chat.completion.chunk",
                    "created": self.created,
                    "model": self.model,
                    "system_fingerprint": SYSTEM_FINGERPRINT,
                    "choices": [],
                    "usage": usage_object(chunk.usage),
                }
            )
        return out


def text_completion(
    result: ChatResult, *, id: str, created: int, model: str, logprobs: bool = False
) -> dict[str, Any]:
    """A whole ``text_completion`` object (``logprobs``: the legacy object, else ``null``)."""
    return {
        "id": id,
        "object": "text_completion",
        "created": created,
        "model": model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": [
            {
                "index": 0,
                "text": result.text,
                "logprobs": LegacyLogprobs().object(result.logprobs) if logprobs else None,
                "finish_reason": finish_reason(result.finish_reason),
            }
        ],
        "usage": usage_object(result.usage),
    }


@dataclass
class CompletionChunker:
    """Engine chunks to streamed ``text_completion`` objects (reasoning is not sent).

    With ``logprobs`` each text chunk carries the legacy ``logprobs`` object of its
    tokens (``text_offset`` counted from the start of the completion).
    """

    model: str
    include_usage: bool = False
    logprobs: bool = False
    id: str = field(default_factory=lambda: new_id("cmpl"))
    created: int = field(default_factory=now)
    _legacy: LegacyLogprobs = field(default_factory=LegacyLogprobs)

    def _chunk(
        self, text: str, finish: str | None = None, logprobs: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        obj: dict[str, Any] = {
            "id": self.id,
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": [{"index": 0, "text": text, "logprobs": logprobs, "finish_reason": finish}],
        }
        if self.include_usage:
            obj["usage"] = None
        return obj

    def convert(self, chunk: Chunk) -> list[dict[str, Any]]:
        """The wire objects of one engine chunk."""
        if isinstance(chunk, TextDelta):
            if not chunk.text:
                return []
            logprobs = self._legacy.object(chunk.logprobs) if self.logprobs else None
            return [self._chunk(chunk.text, logprobs=logprobs)]
        if not isinstance(chunk, FinalChunk):
            return []
        out = [self._chunk("", finish_reason(chunk.finish_reason))]
        if self.include_usage:
            last = self._chunk("")
            last["choices"] = []
            last["usage"] = usage_object(chunk.usage)
            out.append(last)
        return out


def _base64(vector: Sequence[float]) -> str:
    """Little-endian float32 bytes in base64, as OpenAI sends ``encoding_format=base64``."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


def embedding_list(
    vectors: Sequence[list[float]],
    *,
    model: str,
    prompt_tokens: int,
    encoding_format: Literal["float", "base64"] = "float",
    dimensions: int | None = None,
) -> dict[str, Any]:
    """The ``list`` of ``embedding`` objects of an embeddings response.

    Args:
        vectors: One vector per input, in order (L2-normalized).
        model: The model as the request named it.
        prompt_tokens: Tokens of all the inputs.
        encoding_format: ``float`` (lists) or ``base64`` (little-endian float32).
        dimensions: Shorten each vector to this many values and renormalize.

    Raises:
        HTTPError: 400 when ``dimensions`` exceeds the model's width.
    """
    data = []
    for i, values in enumerate(shorten(vectors, dimensions)):
        data.append(
            {
                "object": "embedding",
                "index": i,
                "embedding": _base64(values) if encoding_format == "base64" else values,
            }
        )
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }


def model_object(name: str, created: int, owned_by: str = "local") -> dict[str, Any]:
    """One ``model`` object of ``/v1/models``."""
    return {"id": name, "object": "model", "created": created, "owned_by": owned_by}
