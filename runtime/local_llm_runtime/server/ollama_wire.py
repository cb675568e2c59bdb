"""Ollama's wire format: request models and pure converters to and from the runtime's types.

Everything here is pure (no engine, no store, no I/O), so it is tested without
HTTP. Shapes follow Ollama's ``docs/api.md`` and what the official ``ollama``
Python SDK (0.6) sends and parses:

* request models (:class:`ChatRequest`, :class:`GenerateRequest`, ...) with
  ``extra="forbid"`` and strict types: an unknown field or a wrong type is a
  400 naming it; every field the SDK sends is accepted, and the ones the
  runtime cannot honour are refused by :func:`refuse_unsupported` (never
  silently ignored);
* :func:`to_engine_messages`: Ollama messages (``tool_calls`` with argument
  objects, ``tool`` results named by ``tool_name``) to the engine's
  OpenAI-style messages with call ids;
* :func:`engine_options`, :func:`reasoning_mode`, :func:`engine_format`: the
  request's knobs as the engine's keyword arguments;
* :func:`chat_chunk` / :func:`generate_chunk` / :func:`chat_response` /
  :func:`generate_response`: runtime chunks and results to wire objects,
  durations in nanoseconds, ``created_at`` in RFC 3339;
* :func:`parameters_text`, :func:`modelfile`, :func:`details`: ``/api/show``'s
  text formats; :func:`pull_status`: ``/api/pull``'s progress objects;
  :func:`create_arguments`: ``/api/create``'s fields (or ``modelfile``) for ``create``.

Our departures from Ollama, on purpose: ``done_reason`` is ``cancelled`` for a
generation stopped by a disconnect or a shutdown; a tool call whose arguments
do not validate against the tool's schema is not sent as a call (it must not
be run); ``images``, ``suffix``, ``template``, ``context`` and
image-generation fields are refused with 400 (this runtime has no vision, no
fill-in-the-middle and no raw token context). ``logprobs``/``top_logprobs``
give each object the ``logprobs`` of its tokens (content and thinking), as
Ollama's ``[{"token", "logprob", "bytes", "top_logprobs"}]``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from local_llm_runtime.interface import JsonFormat
from local_llm_runtime.logprobs import token_logprob_object
from local_llm_runtime.options import validate_options
from local_llm_runtime.prompt.reasoning import ReasoningMode
from local_llm_runtime.server.errors import HTTPError
from local_llm_runtime.server.model_names import ModelName
from local_llm_runtime.settings import parse_duration
from local_llm_runtime.store.hub import PullProgress
from local_llm_runtime.types import (
    ChatResult,
    Chunk,
    FinalChunk,
    ModelInfo,
    ReasoningDelta,
    RunningModel,
    TextDelta,
    Timings,
    TokenLogprob,
    ToolCallDelta,
)

__all__ = [
    "ChatRequest",
    "CopyRequest",
    "CreateRequest",
    "DeleteRequest",
    "EmbedRequest",
    "EmbeddingsRequest",
    "GenerateRequest",
    "PullRequest",
    "ShowRequest",
    "chat_chunk",
    "chat_response",
    "create_arguments",
    "created_at",
    "details",
    "engine_format",
    "engine_options",
    "generate_chunk",
    "generate_response",
    "keep_alive_seconds",
    "load_response",
    "modelfile",
    "nanoseconds",
    "parameters_text",
    "pull_status",
    "reasoning_mode",
    "refuse_unsupported",
    "running_model",
    "to_engine_messages",
]

# ---- requests ---------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


Think = bool | Literal["high", "medium", "low"]
Format = Literal["", "json"] | dict[str, Any]
KeepAlive = float | int | str


class ToolCallFunction(_Strict):
    """``tool_calls[].function``: the SDK sends ``name`` and an ``arguments`` object."""

    name: str
    arguments: dict[str, Any] | str = Field(default_factory=dict)
    """An object (Ollama); a JSON string is accepted too (OpenAI-style clients)."""
    index: int | None = None
    description: str | None = None


class ToolCall(_Strict):
    """One call of an assistant message."""

    id: str | None = None
    type: Literal["function"] | None = None
    function: ToolCallFunction


class Message(_Strict):
    """One message of ``/api/chat`` (the SDK's ``Message``)."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str | None = None
    thinking: str | None = None
    images: list[Any] | None = None
    tool_calls: list[ToolCall] | None = None
    tool_name: str | None = None
    """For ``role: tool``: the tool whose result this is."""
    tool_call_id: str | None = None
    """For ``role: tool``: the call answered (optional; matched by ``tool_name`` otherwise)."""


class _Generation(_Strict):
    model: ModelName
    format: Format | None = None
    options: dict[str, Any] | None = None
    stream: bool = True
    keep_alive: KeepAlive | None = None
    think: Think | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None


class ChatRequest(_Generation):
    """``POST /api/chat``."""

    messages: list[Message] = Field(default_factory=list)
    tools: list[dict[str, Any]] | None = None


class GenerateRequest(_Generation):
    """``POST /api/generate``."""

    prompt: str | None = None
    suffix: str | None = None
    system: str | None = None
    template: str | None = None
    context: list[int] | None = None
    raw: bool = False
    images: list[Any] | None = None
    width: int | None = None
    height: int | None = None
    steps: int | None = None


class EmbedRequest(_Strict):
    """``POST /api/embed``."""

    model: ModelName
    input: str | list[str]
    truncate: bool = True
    options: dict[str, Any] | None = None
    keep_alive: KeepAlive | None = None
    dimensions: Annotated[int, Field(gt=0)] | None = None


class EmbeddingsRequest(_Strict):
    """``POST /api/embeddings`` (legacy: one ``prompt``, one unnormalized ``embedding``)."""

    model: ModelName
    prompt: str | None = None
    options: dict[str, Any] | None = None
    keep_alive: KeepAlive | None = None


class ShowRequest(_Strict):
    """``POST /api/show``."""

    model: ModelName
    verbose: bool | None = None


class DeleteRequest(_Strict):
    """``DELETE /api/delete``."""

    model: ModelName


class CopyRequest(_Strict):
    """``POST /api/copy``."""

    source: ModelName
    destination: ModelName


class PullRequest(_Strict):
    """``POST /api/pull``."""

    model: ModelName
    insecure: bool | None = None
    stream: bool = True


class CreateRequest(_Strict):
    """``POST /api/create`` (``from`` a stored name or a GGUF path on the server).

    With ``system``, ``template`` (Jinja), ``messages``, ``parameters`` and ``license``,
    or an older client's ``modelfile`` text (which gives the defaults of these).
    """

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)

    model: ModelName
    from_: str | None = Field(default=None, alias="from")
    system: str | None = None
    parameters: dict[str, Any] | None = None
    stream: bool = True
    quantize: str | None = None
    files: dict[str, str] | None = None
    adapters: dict[str, str] | None = None
    template: str | None = None
    license: str | list[str] | None = None
    messages: list[Any] | None = None
    modelfile: str | None = None


_UNSUPPORTED: dict[str, str] = {
    "images": "this runtime serves text models only (no vision)",
    "suffix": "fill-in-the-middle (suffix) is not supported",
    "template": "custom prompt templates are not supported (the model's own template is used)",
    "context": "the token context of an earlier response is not supported; send the "
    "conversation as /api/chat messages",
    "width": "image generation is not supported",
    "height": "image generation is not supported",
    "steps": "image generation is not supported",
    "quantize": "quantizing is not supported; pull the quantization you want (name:tag)",
    "files": "uploaded blobs are not supported; use 'from' with a model name or a GGUF path",
    "adapters": (
        "adapters: uploaded blobs are not supported; put an ADAPTER line with the adapter's "
        "path in the modelfile field (or use 'local-llm create NAME -f Modelfile')"
    ),
    "license": "a license is not supported",
    "insecure": "insecure registries are not supported",
}


def refuse_unsupported(request: BaseModel) -> None:
    """Refuse the fields of ``request`` this runtime cannot honour, when set to something.

    Empty values (``""``, ``[]``, ``False``, ``0``) are what some clients send by
    default and are accepted.

    Raises:
        HTTPError: 400 naming the first such field and why.
    """
    for name in request.model_fields_set:
        if name not in _UNSUPPORTED or (name == "template" and isinstance(request, ChatRequest)):
            continue
        if name in ("template", "license") and isinstance(request, CreateRequest):
            continue  # a Modelfile's TEMPLATE and LICENSE
        if getattr(request, name):
            raise HTTPError(400, f"{name}: {_UNSUPPORTED[name]}", param=name)


# ---- request knobs -> engine arguments ---------------------------------------------------------

_IGNORED_OPTIONS = frozenset(
    {
        "numa",
        "main_gpu",
        "low_vram",
        "f16_kv",
        "logits_all",
        "vocab_only",
        "use_mmap",
        "use_mlock",
        "embedding_only",
        "num_keep",
        "penalize_newline",
    }
)
"""Ollama options about memory mapping, NUMA and such: they change no answer; accepted, unused."""

_NEUTRAL_OPTIONS: dict[str, Any] = {"mirostat": 0, "tfs_z": 1.0}
"""Ollama sampling options the engine does not implement: accepted only at their no-op value."""


def engine_options(
    options: Mapping[str, Any] | None,
    *,
    logprobs: bool | None = None,
    top_logprobs: int | None = None,
) -> dict[str, Any]:
    """Ollama ``options`` (and the request's ``logprobs``/``top_logprobs``) as the engine's.

    ``None`` values are dropped; Ollama-only load hints that change no answer are
    accepted and unused; ``mirostat``/``tfs_z`` only at their no-op values.

    Raises:
        HTTPError: 400 naming the option: unknown, unsupported or out of range
            (``top_logprobs``: 0 to 20, above 0 only with ``logprobs: true``).
    """
    given = {"logprobs": logprobs, "top_logprobs": top_logprobs}
    try:
        extra = validate_options({k: v for k, v in given.items() if v is not None})
    except ValueError as exc:
        param = "top_logprobs" if "top_logprobs" in str(exc) else "logprobs"
        raise HTTPError(400, f"{param}: {exc}", param=param) from None
    kept: dict[str, Any] = {}
    for key, value in (options or {}).items():
        if value is None or key in _IGNORED_OPTIONS:
            continue
        if key in ("mirostat_eta", "mirostat_tau"):
            continue  # only used with mirostat, which must be 0
        if key in _NEUTRAL_OPTIONS:
            if value != _NEUTRAL_OPTIONS[key]:
                raise HTTPError(
                    400,
                    f"options.{key}: {key}={value!r} is not supported by this runtime (only "
                    f"{_NEUTRAL_OPTIONS[key]!r}); use temperature, top_k, top_p or min_p",
                    param=f"options.{key}",
                )
            continue
        if key == "keep_alive":
            raise HTTPError(
                400, "options.keep_alive: send keep_alive beside options", param="options"
            )
        kept[key] = value
    if extra.get("logprobs"):  # false (some clients' default) asks for nothing
        kept.update(extra)
    try:
        return validate_options(kept)
    except ValueError as exc:  # UnknownOptionError / InvalidOptionError
        raise HTTPError(400, f"options: {exc}", param="options") from None


def keep_alive_seconds(value: float | str | None) -> float | None:
    """A ``keep_alive`` (seconds or a duration like ``"5m"``; negative: forever) in seconds.

    Raises:
        HTTPError: 400 for something that is not a duration.
    """
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise HTTPError(400, f"keep_alive: {exc}", param="keep_alive") from None


def engine_format(value: str | Mapping[str, Any] | None) -> JsonFormat | None:
    """``format`` as the engine's: ``"json"``, a JSON schema, or ``None`` (``""``: none).

    Raises:
        HTTPError: 400 for a schema that is not a JSON object schema.
    """
    if value is None or value == "":
        return None
    if value == "json":
        return "json"
    if isinstance(value, Mapping):
        if not value:
            raise HTTPError(400, "format: an empty JSON schema; send 'json' or a schema")
        return dict(value)
    raise HTTPError(400, f"format: must be 'json' or a JSON schema, not {value!r}", param="format")


def reasoning_mode(think: Think | None) -> ReasoningMode:
    """Ollama's ``think`` as the engine's ``reasoning``.

    ``true`` (or a level) and unset: reasoning comes apart, in ``thinking``;
    ``false``: reasoning is dropped from the answer.
    """
    return "hide" if think is False else "separate"


def to_engine_messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """Ollama chat messages as the engine's OpenAI-style messages.

    Assistant ``tool_calls`` get ids (``call_<message>_<n>`` unless given) and
    argument objects; a ``tool`` message is matched to the earliest unanswered
    call of its ``tool_name`` (or its ``tool_call_id``), as Ollama's templates
    pair them by name. ``thinking`` of earlier answers is not sent back.

    Raises:
        HTTPError: 400 for images (no vision) or a tool call whose arguments are
            not a JSON object.
    """
    out: list[dict[str, Any]] = []
    pending: list[tuple[str, str]] = []  # (name, id) of calls not answered yet
    for i, message in enumerate(messages):
        if message.images:
            raise HTTPError(
                400,
                f"messages.{i}.images: {_UNSUPPORTED['images']}",
                param=f"messages.{i}.images",
            )
        item: dict[str, Any] = {"role": message.role, "content": message.content or ""}
        if message.role == "assistant" and message.tool_calls:
            calls = []
            for j, call in enumerate(message.tool_calls):
                arguments = _arguments(call.function.arguments, f"messages.{i}.tool_calls.{j}")
                call_id = call.id or f"call_{i}_{j}"
                calls.append(
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {"name": call.function.name, "arguments": arguments},
                    }
                )
                pending.append((call.function.name, call_id))
            item["tool_calls"] = calls
        elif message.role == "tool":
            answered = message.tool_call_id
            match = next(
                (
                    k
                    for k, (name, pid) in enumerate(pending)
                    if (answered is not None and pid == answered)
                    or (answered is None and (message.tool_name in (None, name)))
                ),
                None,
            )
            if match is not None:
                name, answered = pending.pop(match)
                item["name"] = message.tool_name or name
            elif message.tool_name:
                item["name"] = message.tool_name
            if answered is not None:
                item["tool_call_id"] = answered
        out.append(item)
    return out


def _arguments(value: Mapping[str, Any] | str, where: str) -> dict[str, Any]:
    if isinstance(value, str):
        from local_llm_runtime.server.streaming import nests_deeper

        try:
            decoded = json.loads(value) if value.strip() else {}
        except (json.JSONDecodeError, RecursionError):
            decoded = None
        if nests_deeper(decoded):
            decoded = None  # deeper than a request body may be: refused as one
        if not isinstance(decoded, dict):
            raise HTTPError(
                400, f"{where}.function.arguments: must be a JSON object", param=where
            ) from None
        return decoded
    return dict(value)


# ---- runtime -> wire ---------------------------------------------------------------------------


def created_at(when: datetime | None = None) -> str:
    """RFC 3339 UTC time with microseconds and ``Z``, as Ollama writes ``created_at``."""
    when = when if when is not None else datetime.now(timezone.utc)
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def nanoseconds(seconds: float) -> int:
    """Seconds as integer nanoseconds (Ollama's durations)."""
    return max(0, round(seconds * 1e9))


def _done_reason(final: FinalChunk | ChatResult) -> str:
    # Ollama says "stop" after tool calls too; "length" when num_predict cut it.
    return "stop" if final.finish_reason == "tool_calls" else final.finish_reason


def _metrics(
    reason: str, prompt_tokens: int, completion_tokens: int, timings: Timings | None, total_s: float
) -> dict[str, Any]:
    t = timings if timings is not None else Timings(0.0, 0.0, 0.0, 0.0)
    return {
        "done": True,
        "done_reason": reason,
        "total_duration": nanoseconds(total_s),
        "load_duration": nanoseconds(t.load_s),
        "prompt_eval_count": prompt_tokens,
        "prompt_eval_duration": nanoseconds(t.prompt_s),
        "eval_count": completion_tokens,
        "eval_duration": nanoseconds(t.generation_s),
    }


def wire_tool_call(call: ToolCallDelta) -> dict[str, Any]:
    """A runtime tool call as Ollama's ``{"id", "function": {"index", "name", "arguments"}}``."""
    return {
        "id": call.id,
        "function": {"index": call.index, "name": call.name, "arguments": call.arguments},
    }


def chat_chunk(model: str, chunk: Chunk, *, total_s: float = 0.0) -> dict[str, Any] | None:
    """One streamed ``/api/chat`` object for a runtime chunk (``None``: nothing to send).

    Args:
        model: The model name as requested.
        chunk: A runtime chunk.
        total_s: Seconds since the request arrived (used by the final object).
    """
    message: dict[str, Any] = {"role": "assistant", "content": ""}
    head = {"model": model, "created_at": created_at()}
    if isinstance(chunk, TextDelta):
        message["content"] = chunk.text
    elif isinstance(chunk, ReasoningDelta):
        message["thinking"] = chunk.text
    elif isinstance(chunk, ToolCallDelta):
        if chunk.error is not None:
            return None
        message["tool_calls"] = [wire_tool_call(chunk)]
    else:
        return {
            **head,
            "message": message,
            **_metrics(
                _done_reason(chunk),
                chunk.usage.prompt_tokens,
                chunk.usage.completion_tokens,
                chunk.timings,
                total_s,
            ),
        }
    return {**head, "message": message, "done": False, **_logprobs(chunk)}


def _logprobs(chunk: Chunk) -> dict[str, Any]:
    """``{"logprobs": [...]}`` for a text or thinking chunk that carries tokens, else ``{}``."""
    if isinstance(chunk, TextDelta | ReasoningDelta) and chunk.logprobs:
        return {"logprobs": _logprob_list(chunk.logprobs)}
    return {}


def _logprob_list(items: Sequence[TokenLogprob]) -> list[dict[str, Any]]:
    return [token_logprob_object(item, empty_top=False) for item in items]


def _result_logprobs(result: ChatResult) -> dict[str, Any]:
    items = [*result.reasoning_logprobs, *result.logprobs]
    return {"logprobs": _logprob_list(items)} if items else {}


def generate_chunk(model: str, chunk: Chunk, *, total_s: float = 0.0) -> dict[str, Any] | None:
    """One streamed ``/api/generate`` object (``response``/``thinking``; ``None``: skip)."""
    head = {"model": model, "created_at": created_at()}
    if isinstance(chunk, TextDelta):
        return {**head, "response": chunk.text, "done": False, **_logprobs(chunk)}
    if isinstance(chunk, ReasoningDelta):
        return {**head, "response": "", "thinking": chunk.text, "done": False, **_logprobs(chunk)}
    if isinstance(chunk, ToolCallDelta):
        return None  # completions offer no tools
    return {
        **head,
        "response": "",
        **_metrics(
            _done_reason(chunk),
            chunk.usage.prompt_tokens,
            chunk.usage.completion_tokens,
            chunk.timings,
            total_s,
        ),
    }


def chat_response(model: str, result: ChatResult, *, total_s: float) -> dict[str, Any]:
    """The whole ``/api/chat`` object of a ``stream: false`` request."""
    message: dict[str, Any] = {"role": "assistant", "content": result.text}
    if result.reasoning:
        message["thinking"] = result.reasoning
    if result.tool_calls:
        message["tool_calls"] = [wire_tool_call(call) for call in result.tool_calls]
    return {
        "model": model,
        "created_at": created_at(),
        "message": message,
        **_metrics(
            _done_reason(result),
            result.usage.prompt_tokens,
            result.usage.completion_tokens,
            result.timings,
            total_s,
        ),
        **_result_logprobs(result),
    }


def generate_response(model: str, result: ChatResult, *, total_s: float) -> dict[str, Any]:
    """The whole ``/api/generate`` object of a ``stream: false`` request."""
    out: dict[str, Any] = {"model": model, "created_at": created_at(), "response": result.text}
    if result.reasoning:
        out["thinking"] = result.reasoning
    out.update(
        _metrics(
            _done_reason(result),
            result.usage.prompt_tokens,
            result.usage.completion_tokens,
            result.timings,
            total_s,
        )
    )
    out.update(_result_logprobs(result))
    return out


def load_response(
    model: str, *, chat: bool, unload: bool, load_s: float = 0.0, total_s: float = 0.0
) -> dict[str, Any]:
    """The answer to an empty prompt/messages: the model was loaded (or unloaded)."""
    out: dict[str, Any] = {"model": model, "created_at": created_at()}
    if chat:
        out["message"] = {"role": "assistant", "content": ""}
    else:
        out["response"] = ""
    out["done"] = True
    out["done_reason"] = "unload" if unload else "load"
    if not unload:
        out["total_duration"] = nanoseconds(total_s)
        out["load_duration"] = nanoseconds(load_s)
    return out


# ---- store -> wire -----------------------------------------------------------------------------


def details(info: ModelInfo | Mapping[str, Any] | None, *, parent: str = "") -> dict[str, Any]:
    """Ollama's ``details`` object from a :class:`ModelInfo` or ``library.show``'s details."""
    if info is None:
        family, parameter_size, quant = "", "", ""
    elif isinstance(info, ModelInfo):
        family = info.architecture or ""
        parameter_size = info.parameter_size or ""
        quant = info.quantization_level or ""
    else:
        family = str(info.get("architecture") or "")
        parameter_size = str(info.get("parameters_human") or "")
        quant = str(info.get("quantization") or "")
    return {
        "parent_model": parent,
        "format": "gguf",
        "family": family,
        "families": [family] if family else None,
        "parameter_size": parameter_size,
        "quantization_level": quant,
    }


def model_info_map(shown: Mapping[str, Any] | None, info: ModelInfo | None) -> dict[str, Any]:
    """Ollama's ``model_info``: GGUF keys (``general.architecture``, ``{arch}.context_length``)."""
    d = shown or {}
    arch = str(d.get("architecture") or (info.architecture if info else None) or "unknown")
    out: dict[str, Any] = {"general.architecture": arch}
    if d.get("name"):
        out["general.basename"] = d["name"]
    if d.get("parameters"):
        out["general.parameter_count"] = d["parameters"]
    pairs = {
        "context_length": d.get("context_length") or (info.context_length if info else None),
        "embedding_length": d.get("embedding_length") or (info.embedding_length if info else None),
        "block_count": d.get("block_count"),
        "attention.head_count": d.get("head_count"),
        "attention.head_count_kv": d.get("head_count_kv"),
        "pooling_type": d.get("pooling_type"),
    }
    for key, value in pairs.items():
        if value is not None:
            out[f"{arch}.{key}"] = value
    return out


def _param_value(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False) if isinstance(value, str) else str(value)


def parameters_text(parameters: Mapping[str, Any]) -> str:
    """Parameters in Ollama's ``show`` text format: ``name<padding> value`` per line.

    A list (``stop``) is one line per item; strings are quoted.
    """
    lines: list[str] = []
    for key, value in parameters.items():
        values = value if isinstance(value, list | tuple) else [value]
        lines.extend(f"{key:<30} {_param_value(v)}" for v in values)
    return "\n".join(lines)


def modelfile(
    name: str,
    source: str,
    *,
    template: str | None,
    system: str | None,
    parameters: Mapping[str, Any],
    messages: Sequence[Mapping[str, str]] = (),
    adapters: Sequence[str] = (),
    license: str | None = None,
) -> str:
    """A Modelfile for a model, as ``ollama show --modelfile`` writes it.

    Written by :func:`~local_llm_runtime.store.modelfile.render_modelfile` (as
    ``local-llm show --modelfile``): every value quoted so that it reads back exactly.
    """
    from local_llm_runtime.store.modelfile import modelfile_of, render_modelfile

    return render_modelfile(
        modelfile_of(
            source,
            system=system,
            parameters=parameters,
            template=template,
            messages=messages,
            adapters=adapters,
            license=license,
        ),
        name=name,
    )


def create_arguments(request: CreateRequest) -> dict[str, Any]:
    """``/api/create``'s fields as :meth:`ModelLibrary.create`'s keyword arguments.

    A ``modelfile`` gives the defaults; the request's own fields win over it.

    Raises:
        HTTPError: 400 for a bad Modelfile, no ``from``, or a malformed message.
    """
    from local_llm_runtime.errors import ModelfileError
    from local_llm_runtime.store.modelfile import parse_modelfile

    out: dict[str, Any] = {}
    if request.modelfile:
        try:
            out = parse_modelfile(request.modelfile).create_arguments()
        except ModelfileError as exc:
            raise HTTPError(400, f"modelfile: {exc}", param="modelfile") from None
    if request.from_:
        out["source"] = request.from_
    if not out.get("source"):
        raise HTTPError(400, "from: required (a model name or a GGUF path)", param="from")
    if request.system is not None:
        out["system"] = request.system
    if request.template:
        out["template"] = request.template
    if request.parameters:
        out["parameters"] = {**(out.get("parameters") or {}), **engine_options(request.parameters)}
    if request.license:
        text = request.license
        out["license"] = text if isinstance(text, str) else "\n\n".join(text)
    if request.messages:
        history: list[dict[str, str]] = []
        for index, message in enumerate(request.messages):
            if not (
                isinstance(message, dict)
                and message.get("role") in ("system", "user", "assistant")
                and isinstance(message.get("content"), str)
            ):
                raise HTTPError(
                    400,
                    f"messages[{index}]: a fixed history message has role system, user or "
                    "assistant and text content",
                    param=f"messages[{index}]",
                )
            history.append({"role": message["role"], "content": message["content"]})
        out["messages"] = history
    return out


def running_model(model: RunningModel, *, digest: str, info: ModelInfo | None) -> dict[str, Any]:
    """One ``/api/ps`` entry.

    ``size_vram`` is the file size when layers are offloaded to a GPU (an upper
    bound: the share per layer is not tracked) and 0 on CPU.
    """
    return {
        "name": model.name,
        "model": model.name,
        "size": model.size,
        "digest": digest,
        "details": details(info),
        "expires_at": created_at(model.expires_at) if model.expires_at is not None else None,
        "size_vram": model.size if model.gpu_layers > 0 else 0,
        "context_length": model.num_ctx,
    }


def pull_status(event: PullProgress) -> dict[str, Any]:
    """A pull progress event as Ollama's ``/api/pull`` object."""
    if event.status != "pulling":
        return {"status": event.status}
    digest = f"sha256:{event.digest}" if event.digest else None
    label = event.digest[:12] if event.digest else (event.file or "")
    out: dict[str, Any] = {"status": f"pulling {label}"}
    if digest is not None:
        out["digest"] = digest
    out["total"] = event.total or 0
    out["completed"] = event.completed or 0
    return out
