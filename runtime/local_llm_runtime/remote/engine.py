"""The remote backend: the engine interface over an OpenAI-compatible or Ollama server.

:class:`RemoteEngine` implements :class:`~local_llm_runtime.interface.EngineProtocol`
by sending each request to a server (vLLM, SGLang, llama-server,
llama_cpp.server, Ollama, ``local-llm serve``) and turning its answer into the
runtime's chunks, so every adapter works unchanged. Sync methods use
:class:`httpx.Client`, the ``a``-prefixed ones :class:`httpx.AsyncClient` (no
thread per request). Pieces: :mod:`.transport` (HTTP, retries, errors),
:mod:`.openai_dialect` / :mod:`.ollama_dialect` (wire formats),
:mod:`.chunks` (chunk assembly), :mod:`.models` (name mapping).

What differs from in-process, on purpose:

* usage: from the server (``stream_options.include_usage``; Ollama's counts);
  when a server sends none it is counted with the local tokenizer of the model
  when pulled here, else it is 0;
* forced tools: ``tool_choice`` is sent on the OpenAI dialect; Ollama has none.
  With ``required``/``any`` or a tool name, an answer without the forced call
  raises :class:`~local_llm_runtime.errors.ToolCallMissingError` (either dialect);
* embeddings: Ollama's ``/api/embed`` always returns unit vectors, so
  ``normalize=False`` cannot undo that there; ``task`` prefixes are not added
  (pass ``prefix=``); ``dimensions`` is sent (both dialects) and applied again
  here (a server that ignores it still gives the shortened vectors);
  ``truncate=False`` is sent to Ollama (``truncate: false``), the OpenAI API has
  no such field (OpenAI itself refuses an over-long input);
* options: see :mod:`.options_map` (load options are the server's configuration).
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Callable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import httpx

from local_llm_runtime.errors import (
    InvalidOptionError,
    LocalLLMError,
    ModelNotFoundError,
    ServerUnavailableError,
    ToolCallMissingError,
)
from local_llm_runtime.prompt.reasoning import ReasoningMode
from local_llm_runtime.prompt.tool_schema import check_json_schema, normalize_tools
from local_llm_runtime.remote import ollama_dialect as ollama
from local_llm_runtime.remote import openai_dialect as openai
from local_llm_runtime.remote.chunks import Assembler
from local_llm_runtime.remote.models import ServedNames
from local_llm_runtime.remote.options_map import checked_options
from local_llm_runtime.remote.transport import Transport, display_url, error_for
from local_llm_runtime.settings import RemoteSettings, RuntimeSettings
from local_llm_runtime.streams import (
    AsyncChunkStream,
    NativeAsyncChunkStream,
    RequestSignal,
    WholeResults,
    stream_method,
)
from local_llm_runtime.types import (
    Chunk,
    EmbeddingTask,
    ModelInfo,
    RunningModel,
    ToolCallDelta,
    ToolChoice,
)
from local_llm_runtime.validation import validate_messages, validate_prompt, validate_texts
from local_llm_runtime.vectors import check_dimensions, check_truncate, finish_vectors

__all__ = ["EMBED_BATCH", "RemoteEngine"]

Dialect = Literal["openai", "ollama"]

EMBED_BATCH = 64
"""Texts per embeddings request (longer lists are sent in batches, in order)."""


@dataclass
class _Call:
    """One generation request, validated (no I/O yet)."""

    kind: Literal["chat", "generate"]
    model: str
    messages: list[dict[str, Any]] = field(default_factory=list)
    prompt: str = ""
    system: str | None = None
    raw: bool = False
    tools: list[dict[str, Any]] = field(default_factory=list)
    tool_choice: ToolChoice = "auto"
    parallel_tool_calls: bool = True
    format: Mapping[str, Any] | str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    reasoning: ReasoningMode = "separate"
    keep_alive: float | str | None = None

    @property
    def forced(self) -> bool:
        return bool(self.tools) and self.tool_choice not in ("auto", "none")


class RemoteEngine(WholeResults):
    """The engine interface over a remote server (see the module doc).

    Args:
        settings: Runtime settings (the environment when omitted): stream idle
            timeout, and the store whose pulled models give a local tokenizer.
        remote: Where the server is (default :meth:`RemoteSettings.from_env`).
        transport: An httpx transport for the sync client (tests).
        async_transport: An httpx transport for the async client (tests).

    Raises:
        InvalidOptionError: Without ``remote`` and without ``LOCAL_LLM_BASE_URL``.
    """

    def __init__(
        self,
        settings: RuntimeSettings | None = None,
        *,
        remote: RemoteSettings | None = None,
        transport: httpx.BaseTransport | None = None,
        async_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.settings = settings or RuntimeSettings.from_env()
        remote = remote if remote is not None else RemoteSettings.from_env()
        if remote is None:
            raise InvalidOptionError(
                "The remote backend needs a server URL: pass base_url= (RemoteSettings) or set "
                "LOCAL_LLM_BASE_URL (e.g. http://gpu-box:8000/v1)."
            )
        self.remote = remote
        self.http = Transport(remote, transport=transport, async_transport=async_transport)
        self.names = ServedNames(remote.model_map)
        self._dialect: Dialect | None = None if remote.dialect == "auto" else remote.dialect
        self._lock = threading.Lock()
        self._tokenize_route: str | None = None
        self._local: Any = None

    def __repr__(self) -> str:
        dialect = self._dialect or "auto"
        return f"RemoteEngine({display_url(self.http.root)!r}, dialect={dialect!r})"

    @property
    def server(self) -> str:
        """The server's URL as messages show it."""
        return display_url(self.http.root)

    # ---- dialect and names (sync and async twins) ----------------------------------

    def _detect_from(self, response: httpx.Response | None) -> Dialect:
        if response is not None and response.status_code in (401, 403):
            raise error_for(response)
        if response is not None and response.status_code == 200:
            try:
                body = response.json()
            except ValueError:
                body = None
            if isinstance(body, Mapping) and "version" in body:
                return "ollama"
        return "openai"

    def dialect(self) -> Dialect:
        """The server's dialect: configured, or detected once (``/v1`` URL, ``/api/version``)."""
        if self._dialect is None:
            if self.remote.base_url.rstrip("/").endswith("/v1"):
                found: Dialect = "openai"
            else:
                response = self.http.send("GET", "/api/version", allow=tuple(range(400, 600)))
                found = self._detect_from(response)
            self._dialect = found
        return self._dialect

    async def adialect(self) -> Dialect:
        """Async :meth:`dialect`."""
        if self._dialect is None:
            if self.remote.base_url.rstrip("/").endswith("/v1"):
                found: Dialect = "openai"
            else:
                response = await self.http.asend(
                    "GET", "/api/version", allow=tuple(range(400, 600))
                )
                found = self._detect_from(response)
            self._dialect = found
        return self._dialect

    def _list_request(self, dialect: Dialect) -> str:
        return "/v1/models" if dialect == "openai" else "/api/tags"

    def _parse_list(self, dialect: Dialect, body: Any) -> list[openai.ServedModel]:
        if dialect == "openai":
            return openai.models_of(body)
        return [openai.ServedModel(name) for name in ollama.model_names_of(body)]

    def served_name(self, model: str) -> str:
        """The name the server serves ``model`` as (see :mod:`.models`).

        Raises:
            ModelNotFoundError: The server has no such model (its models are listed).
        """
        explicit = self.names.explicit(model)
        if explicit is not None:
            return explicit
        fresh = False
        if not self.names.known:
            dialect = self.dialect()
            body = self.http.send("GET", self._list_request(dialect)).json()
            self.names.set_served(self._parse_list(dialect, body))
            fresh = True
        try:
            return self.names.resolve(model)
        except ModelNotFoundError:
            if fresh:
                raise
            self.names.forget()
            return self.served_name(model)

    async def aserved_name(self, model: str) -> str:
        """Async :meth:`served_name`."""
        explicit = self.names.explicit(model)
        if explicit is not None:
            return explicit
        fresh = False
        if not self.names.known:
            dialect = await self.adialect()
            response = await self.http.asend("GET", self._list_request(dialect))
            self.names.set_served(self._parse_list(dialect, response.json()))
            fresh = True
        try:
            return self.names.resolve(model)
        except ModelNotFoundError:
            if fresh:
                raise
            self.names.forget()
            return await self.aserved_name(model)

    # ---- requests -------------------------------------------------------------------

    def _chat_call(
        self,
        model: str,
        messages: Sequence[Mapping[str, Any]],
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: ToolChoice = "auto",
        parallel_tool_calls: bool = True,
        format: Mapping[str, Any] | str | None = None,
        options: Mapping[str, Any] | None = None,
        reasoning: ReasoningMode = "separate",
        keep_alive: float | str | None = None,
    ) -> _Call:
        checked = validate_messages(messages)
        if format is not None:
            check_json_schema(format, "format")
        normalized = normalize_tools(tools)
        choice: ToolChoice = "required" if tool_choice == "any" else tool_choice
        names = {t["function"]["name"] for t in normalized}
        if choice not in ("auto", "none", "required") and choice not in names:
            raise InvalidOptionError(
                f"tool_choice {tool_choice!r} names no offered tool; offered: "
                f"{', '.join(sorted(names)) or 'none'}."
            )
        if reasoning not in ("separate", "hide", "inline"):
            raise InvalidOptionError(
                f"reasoning={reasoning!r} is not one of separate, hide, inline."
            )
        opts = checked_options(options)
        return _Call(
            kind="chat",
            model=model,
            messages=checked,
            tools=normalized,
            tool_choice=choice,
            parallel_tool_calls=parallel_tool_calls,
            format=format,
            options=opts,
            reasoning=reasoning,
            keep_alive=keep_alive if keep_alive is not None else opts.get("keep_alive"),
        )

    def _generate_call(
        self,
        model: str,
        prompt: str,
        *,
        system: str | None = None,
        raw: bool = False,
        format: Mapping[str, Any] | str | None = None,
        options: Mapping[str, Any] | None = None,
        keep_alive: float | str | None = None,
    ) -> _Call:
        prompt = validate_prompt(prompt)
        if format is not None:
            check_json_schema(format, "format")
        opts = checked_options(options)
        return _Call(
            kind="generate",
            model=model,
            prompt=prompt,
            system=system,
            raw=raw,
            format=format,
            options=opts,
            keep_alive=keep_alive if keep_alive is not None else opts.get("keep_alive"),
        )

    def _request(self, call: _Call, dialect: Dialect, served: str) -> tuple[str, dict[str, Any]]:
        if dialect == "ollama":
            if call.kind == "chat":
                return "/api/chat", ollama.chat_body(
                    served,
                    call.messages,
                    tools=call.tools if call.tool_choice != "none" else None,
                    format=call.format,
                    options=call.options,
                    keep_alive=call.keep_alive,
                )
            return "/api/generate", ollama.generate_body(
                served,
                call.prompt,
                system=call.system,
                raw=call.raw,
                format=call.format,
                options=call.options,
                keep_alive=call.keep_alive,
            )
        if call.kind == "generate" and call.raw and call.format is None:
            return "/v1/completions", openai.completion_body(
                served, call.prompt, options=call.options
            )
        messages = call.messages
        if call.kind == "generate":
            messages = [{"role": "user", "content": call.prompt}]
            if call.system is not None:
                messages.insert(0, {"role": "system", "content": call.system})
        return "/v1/chat/completions", openai.chat_body(
            served,
            messages,
            tools=call.tools,
            tool_choice=call.tool_choice,
            parallel_tool_calls=call.parallel_tool_calls,
            format=call.format,
            options=call.options,
        )

    def _assembler(self, call: _Call) -> Assembler:
        def count(text: str) -> tuple[int, int] | None:
            local = self._local_engine(call.model)
            if local is None:
                return None
            if call.kind == "chat":
                prompt = local.count_chat_tokens(call.model, call.messages, tools=call.tools)
            else:
                prompt = len(local.tokenize(call.model, call.prompt))
            return prompt, len(local.tokenize(call.model, text)) if text else 0

        return Assembler(
            model=call.model,
            reasoning=call.reasoning,
            tools=call.tools if call.tool_choice != "none" else None,
            count_tokens=count,
        )

    def _apply(self, path: str, assembler: Assembler, data: Mapping[str, Any]) -> list[Chunk]:
        message = openai.event_error(data)
        if message is not None:
            raise self._stream_error(message)
        if path == "/v1/chat/completions":
            return openai.apply_chat_event(assembler, data)
        if path == "/v1/completions":
            return openai.apply_completion_event(assembler, data)
        return ollama.apply_line(assembler, data)

    def _stream_error(self, message: str) -> LocalLLMError:
        fake = httpx.Response(
            500 if "context" not in message.lower() else 400,
            json={"error": {"message": message}},
            request=httpx.Request("POST", self.http.root),
        )
        return error_for(fake)

    def _finish(self, call: _Call, chunks: list[Chunk]) -> list[Chunk]:
        if call.forced:
            calls = [c for c in chunks if isinstance(c, ToolCallDelta)]
            wanted = call.tool_choice if call.tool_choice != "required" else None
            if not calls or (wanted is not None and all(c.name != wanted for c in calls)):
                raise ToolCallMissingError(str(call.tool_choice), self.server)
        return chunks

    def _not_found(self, call: _Call, exc: ModelNotFoundError) -> ModelNotFoundError:
        self.names.forget()
        return self.names.not_found(call.model, str(exc)) if self.names.known else exc

    @staticmethod
    def _remaining(signal: RequestSignal) -> float | None:
        return None if signal.deadline is None else signal.deadline - time.monotonic()

    def _run(self, call: _Call, signal: RequestSignal) -> Iterator[Chunk]:
        signal.model = call.model
        try:
            dialect = self.dialect()
            served = self.served_name(call.model)
            path, body = self._request(call, dialect, served)
            assembler = self._assembler(call)
            try:
                response = self.http.send(
                    "POST",
                    path,
                    body,
                    stream=True,
                    model=call.model,
                    remaining=self._remaining(signal),
                )
            except ModelNotFoundError as exc:
                raise self._not_found(call, exc) from None
            watcher = _HangUp(signal, response)
            try:
                sse = path.startswith("/v1/")
                if not _streamable(response, sse=sse):
                    response.read()
                    raise self._not_a_stream(response)
                for data in _sync_events(response, sse=sse, done=assembler.ended):
                    if signal.is_set():
                        yield from assembler.end(cancelled=True)
                        return
                    yield from self._apply(path, assembler, data)
                self._check_complete(assembler)
                yield from self._finish(call, assembler.end())
            except (httpx.TransportError, ServerUnavailableError):
                if watcher.fired and not signal.timed_out:  # cancelled or closed mid-read
                    yield from assembler.end(cancelled=True)
                    return
                raise
            finally:
                watcher.stop()
                response.close()
        except ServerUnavailableError:
            if signal.timed_out:
                raise signal.timeout_error() from None
            raise
        except httpx.TimeoutException as exc:
            if signal.timed_out:
                raise signal.timeout_error() from None
            raise self._stalled(path, exc) from None
        except httpx.TransportError as exc:
            if signal.timed_out:
                raise signal.timeout_error() from None
            raise self._lost(exc) from None

    async def _arun(self, call: _Call, signal: RequestSignal) -> AsyncGenerator[Chunk, None]:
        signal.model = call.model
        try:
            dialect = await self.adialect()
            served = await self.aserved_name(call.model)
            path, body = self._request(call, dialect, served)
            assembler = self._assembler(call)
            try:
                response = await self.http.asend(
                    "POST",
                    path,
                    body,
                    stream=True,
                    model=call.model,
                    remaining=self._remaining(signal),
                )
            except ModelNotFoundError as exc:
                raise self._not_found(call, exc) from None
            try:
                sse = path.startswith("/v1/")
                if not _streamable(response, sse=sse):
                    await response.aread()
                    raise self._not_a_stream(response)
                async for data in _async_events(response, sse=sse, done=assembler.ended):
                    if signal.is_set():
                        for chunk in assembler.end(cancelled=True):
                            yield chunk
                        return
                    for chunk in self._apply(path, assembler, data):
                        yield chunk
                self._check_complete(assembler)
                for chunk in self._finish(call, assembler.end()):
                    yield chunk
            finally:
                await response.aclose()
        except ServerUnavailableError:
            if signal.timed_out:
                raise signal.timeout_error() from None
            raise
        except httpx.TimeoutException as exc:
            if signal.timed_out:
                raise signal.timeout_error() from None
            raise self._stalled(path, exc) from None
        except httpx.TransportError as exc:
            if signal.timed_out:
                raise signal.timeout_error() from None
            raise self._lost(exc) from None

    def _lost(self, exc: Exception | None) -> ServerUnavailableError:
        how = (
            f"broke during the answer ({type(exc).__name__})"
            if exc is not None
            else "closed before the end of the answer (no finish reason, [DONE] or done)"
        )
        return ServerUnavailableError(
            f"The connection to the server at {self.server} {how}; the answer is incomplete: "
            "ask again, and check the server's health (or the proxy in front of it).",
            url=self.server,
        )

    def _check_complete(self, assembler: Assembler) -> None:
        """A stream that ends without the server's end marker was cut off: never a whole answer."""
        if not assembler.complete:
            raise self._lost(None)

    def _stalled(self, path: str, exc: Exception) -> ServerUnavailableError:
        error = self.http._timed_out(path, exc)
        error.args = (f"{error.args[0]} The answer is incomplete.",)
        return error

    def _not_a_stream(self, response: httpx.Response) -> ServerUnavailableError:
        ctype = response.headers.get("content-type", "no content-type")
        text = " ".join(response.text.split())[:200]
        return ServerUnavailableError(
            f"The server at {display_url(response.request.url)} answered {ctype} instead of a "
            f"stream ({text!r}); is base_url a model server (not a proxy's page), and the "
            "dialect right (LOCAL_LLM_REMOTE_DIALECT)?",
            url=self.server,
        )

    # ---- the interface: generation ---------------------------------------------------

    @stream_method
    def chat_stream(
        self,
        model: str,
        messages: Sequence[Mapping[str, Any]],
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: ToolChoice = "auto",
        parallel_tool_calls: bool = True,
        format: Mapping[str, Any] | Literal["json"] | None = None,
        options: Mapping[str, Any] | None = None,
        reasoning: ReasoningMode = "separate",
        keep_alive: float | str | None = None,
        cancel: threading.Event | None = None,
        timeout: float | None = None,
    ) -> Iterator[Chunk]:
        """Stream a chat answer from the server (arguments as the interface's).

        Validation (messages, tools, tool_choice, format, options) happens here,
        before any request; the request itself is sent on the first read.

        Raises:
            InvalidOptionError, UnknownOptionError: Malformed arguments (at the call).
            ModelNotFoundError: The server has no such model (its models are listed).
            AuthenticationError: The server refused the API key.
            ContextLengthExceededError: The server said the prompt does not fit.
            ServerUnavailableError: Unreachable, or failing after the retries.
            ToolCallMissingError: A forced tool call is missing from the answer.
            RequestTimeoutError: Past ``timeout``.
        """
        del timeout
        assert isinstance(cancel, RequestSignal)
        call = self._chat_call(
            model,
            messages,
            tools=tools,
            tool_choice=tool_choice,
            parallel_tool_calls=parallel_tool_calls,
            format=format,
            options=options,
            reasoning=reasoning,
            keep_alive=keep_alive,
        )
        return self._run(call, cancel)

    @stream_method
    def generate_stream(
        self,
        model: str,
        prompt: str,
        *,
        system: str | None = None,
        raw: bool = False,
        format: Mapping[str, Any] | Literal["json"] | None = None,
        options: Mapping[str, Any] | None = None,
        keep_alive: float | str | None = None,
        cancel: threading.Event | None = None,
        timeout: float | None = None,
    ) -> Iterator[Chunk]:
        """Stream a completion from the server.

        OpenAI: ``/v1/completions`` with ``raw=True`` (else a chat with the prompt as
        the user message); Ollama: ``/api/generate``.
        """
        del timeout
        assert isinstance(cancel, RequestSignal)
        call = self._generate_call(
            model,
            prompt,
            system=system,
            raw=raw,
            format=format,
            options=options,
            keep_alive=keep_alive,
        )
        return self._run(call, cancel)

    def achat_stream(
        self,
        model: str,
        messages: Sequence[Mapping[str, Any]],
        *,
        cancel: threading.Event | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> AsyncChunkStream:
        """Async :meth:`chat_stream` over the async client (no worker thread)."""
        signal = RequestSignal(cancel, timeout)
        call = self._chat_call(model, messages, **kwargs)
        return NativeAsyncChunkStream(lambda s: self._arun(call, s), signal)

    def agenerate_stream(
        self,
        model: str,
        prompt: str,
        *,
        cancel: threading.Event | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> AsyncChunkStream:
        """Async :meth:`generate_stream` over the async client (no worker thread)."""
        signal = RequestSignal(cancel, timeout)
        call = self._generate_call(model, prompt, **kwargs)
        return NativeAsyncChunkStream(lambda s: self._arun(call, s), signal)

    # ---- embeddings -------------------------------------------------------------------

    def _embed_plan(
        self,
        texts: Sequence[str],
        prefix: str | None,
        options: Mapping[str, Any] | None,
    ) -> list[str]:
        checked_options(options)
        out = validate_texts(texts)
        if prefix:
            out = [t if t.startswith(prefix) else prefix + t for t in out]
        return out

    def _embed_request(
        self,
        dialect: Dialect,
        served: str,
        batch: list[str],
        keep_alive: float | str | None,
        dimensions: int | None = None,
        truncate: bool = True,
    ) -> tuple[str, dict[str, Any]]:
        if dialect == "ollama":
            body = ollama.embed_body(served, batch, keep_alive=keep_alive)
            if not truncate:
                body["truncate"] = False
        else:
            body = openai.embeddings_body(served, batch)
        if dimensions is not None:
            body["dimensions"] = dimensions
        return ("/api/embed" if dialect == "ollama" else "/v1/embeddings"), body

    def _vectors(self, dialect: Dialect, body: Any, expected: int) -> list[list[float]]:
        try:
            if dialect == "ollama":
                vectors = [[float(x) for x in v] for v in body.get("embeddings") or []]
                if len(vectors) != expected:
                    raise ValueError(f"the server answered {len(vectors)} vectors for {expected}")
                return vectors
            return openai.embeddings_of(body, expected)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ServerUnavailableError(
                f"The server at {self.server} answered embeddings this client cannot read "
                f"({exc}); check that the model is an embedding model.",
                url=self.server,
            ) from None

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
        """One vector per text, in order, in batches of :data:`EMBED_BATCH`.

        ``normalize`` is applied here (L2); ``prefix`` is prepended here;
        ``task`` adds no prefix on a remote server (pass ``prefix=``);
        ``dimensions`` and ``truncate`` are sent where the dialect has them (see the
        module notes) and ``dimensions`` is applied here too.
        """
        del task
        check_dimensions(dimensions)
        check_truncate(truncate)
        batch_texts = self._embed_plan(texts, prefix, options)
        if not batch_texts:
            return []
        dialect = self.dialect()
        served = self.served_name(model)
        out: list[list[float]] = []
        for start in range(0, len(batch_texts), EMBED_BATCH):
            batch = batch_texts[start : start + EMBED_BATCH]
            path, body = self._embed_request(
                dialect, served, batch, keep_alive, dimensions, truncate
            )
            response = self.http.send("POST", path, body, model=model)
            out += self._vectors(dialect, response.json(), len(batch))
        return finish_vectors(out, dimensions=dimensions, normalize=normalize)

    async def aembed(self, model: str, texts: Sequence[str], **kwargs: Any) -> list[list[float]]:
        """Async :meth:`embed` over the async client."""
        normalize = kwargs.pop("normalize", True)
        kwargs.pop("task", None)
        dimensions = check_dimensions(kwargs.pop("dimensions", None))
        truncate = check_truncate(kwargs.pop("truncate", True))
        batch_texts = self._embed_plan(
            texts, kwargs.pop("prefix", None), kwargs.pop("options", None)
        )
        keep_alive = kwargs.pop("keep_alive", None)
        if kwargs:
            raise InvalidOptionError(f"Unknown argument(s) for aembed: {', '.join(kwargs)}.")
        if not batch_texts:
            return []
        dialect = await self.adialect()
        served = await self.aserved_name(model)
        out: list[list[float]] = []
        for start in range(0, len(batch_texts), EMBED_BATCH):
            batch = batch_texts[start : start + EMBED_BATCH]
            path, body = self._embed_request(
                dialect, served, batch, keep_alive, dimensions, truncate
            )
            response = await self.http.asend("POST", path, body, model=model)
            out += self._vectors(dialect, response.json(), len(batch))
        return finish_vectors(out, dimensions=dimensions, normalize=normalize)

    # ---- tokens -------------------------------------------------------------------------

    def _local_engine(self, model: str) -> Any:
        """The in-process engine when ``model`` is pulled here (for its tokenizer), else None."""
        from local_llm_runtime.store.library import ModelLibrary

        try:
            library = ModelLibrary(self.settings)
            library.resolve(model, pull=False)
        except (LocalLLMError, ValueError, OSError):
            return None
        with self._lock:
            if self._local is None:
                # Through the composition root, never a static import of a backend.
                from local_llm_runtime.backends import create_engine

                self._local = create_engine("llama", self.settings)
            return self._local

    def _server_tokenize(self, served: str, text: str, special: bool) -> list[int] | None:
        routes = (
            [self._tokenize_route] if self._tokenize_route else ["/tokenize", "/extras/tokenize"]
        )
        for route in routes:
            if route is None:
                continue
            body: dict[str, Any]
            if route == "/tokenize":  # llama-server (content), vLLM (prompt)
                body = {
                    "model": served,
                    "content": text,
                    "prompt": text,
                    "add_special": False,
                    "add_special_tokens": False,
                    "parse_special": special,
                }
            else:  # llama_cpp.server
                body = {"model": served, "input": text}
            response = self.http.send("POST", route, body, allow=tuple(range(400, 500)))
            if response.is_error:
                continue
            try:
                tokens = response.json().get("tokens")
            except (ValueError, AttributeError):
                continue
            if isinstance(tokens, list):
                self._tokenize_route = route
                return [int(t["id"] if isinstance(t, Mapping) else t) for t in tokens]
        return None

    def tokenize(self, model: str, text: str, *, special: bool = False) -> list[int]:
        """Token ids of ``text`` for ``model``.

        The server's ``/tokenize`` (llama-server, vLLM, llama_cpp.server's
        ``/extras/tokenize``) when it has one, else the local tokenizer of the model when
        pulled here.

        Raises:
            ModelNotFoundError: The server has no such model.
            InvalidOptionError: Neither the server nor this machine can tokenize it.
        """
        served = self.served_name(model)
        if self.dialect() == "openai":
            tokens = self._server_tokenize(served, text, special)
            if tokens is not None:
                return tokens
        local = self._local_engine(model)
        if local is None:
            raise InvalidOptionError(
                f"The server at {self.server} has no tokenize endpoint and {model!r} is not "
                f"pulled here; pull it (local-llm pull {model}) to count its tokens locally."
            )
        return list(local.tokenize(model, text, special=special))

    def count_chat_tokens(
        self,
        model: str,
        messages: Sequence[Mapping[str, Any]],
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> int:
        """Prompt tokens of a chat.

        The local template and tokenizer when the model is
        pulled here, else the server's own ``usage.prompt_tokens`` of a one-token request.
        """
        call = self._chat_call(model, messages, tools=tools)
        local = self._local_engine(model)
        if local is not None:
            return int(local.count_chat_tokens(model, call.messages, tools=call.tools))
        result = self.chat(
            model, call.messages, tools=call.tools or None, options={"num_predict": 1}
        )
        if result.usage.prompt_tokens <= 0:
            raise InvalidOptionError(
                f"The server at {self.server} reports no usage and {model!r} is not pulled "
                f"here; pull it (local-llm pull {model}) to count its tokens locally."
            )
        return result.usage.prompt_tokens

    # ---- models -------------------------------------------------------------------------

    def model_info(self, model: str) -> ModelInfo:
        """What the server says about a model.

        The context window from ``/v1/models`` metadata (vLLM
        ``max_model_len``, llama-server ``meta.n_ctx_train``) or Ollama's ``/api/show``.

        Raises:
            ModelNotFoundError: The server has no such model.
        """
        served = self.served_name(model)
        if self.dialect() == "ollama":
            show = self.http.send("POST", "/api/show", {"model": served}, model=model).json()
            capabilities = tuple(str(c) for c in show.get("capabilities") or ())
            details = show.get("details") or {}
            info = show.get("model_info") or {}
            embedding_length = next(
                (
                    v
                    for k, v in info.items()
                    if str(k).endswith(".embedding_length") and isinstance(v, int)
                ),
                None,
            )
            return ModelInfo(
                name=model,
                kind="embedding" if "embedding" in capabilities else "chat",
                capabilities=capabilities or ("completion",),
                context_length=ollama.context_length_of(show),
                embedding_length=embedding_length,
                architecture=info.get("general.architecture") or details.get("family"),
                parameter_size=details.get("parameter_size"),
                quantization_level=details.get("quantization_level"),
            )
        entry = self.names.entry(served)
        return ModelInfo(
            name=model,
            kind="chat",
            capabilities=("completion", "tools"),
            context_length=entry.context_length if entry is not None else None,
        )

    def _running(self, model: str, num_ctx: int, embedding: bool) -> RunningModel:
        return RunningModel(
            name=model,
            path=Path(model),
            size=0,
            num_ctx=num_ctx,
            gpu_layers=0,
            offload=f"served by {self.server}",
            embedding=embedding,
            expires_at=None,
            active_requests=0,
        )

    def preload(
        self,
        model: str,
        *,
        options: Mapping[str, Any] | None = None,
        embedding: bool = False,
        keep_alive: float | str | None = None,
    ) -> RunningModel:
        """Check that the server has the model; on Ollama also load it (an empty request).

        Raises:
            ModelNotFoundError: The server has no such model.
        """
        checked_options(options)
        served = self.served_name(model)
        if self.dialect() == "ollama":
            body: dict[str, Any] = {"model": served}
            if keep_alive is not None:
                body["keep_alive"] = keep_alive
            path = "/api/embed" if embedding else "/api/generate"
            if embedding:
                body["input"] = []
            self.http.send("POST", path, body, model=model)
        info_ctx = 0
        entry = self.names.entry(served)
        if entry is not None and entry.context_length:
            info_ctx = entry.context_length
        return self._running(model, info_ctx, embedding)

    def ps(self) -> list[RunningModel]:
        """Ollama's ``/api/ps`` on the Ollama dialect; ``[]`` where a server has no such list."""
        if self.dialect() != "ollama":
            return []
        response = self.http.send("GET", "/api/ps", allow=(404, 405))
        if response.is_error:
            return []
        out = []
        for item in response.json().get("models") or ():
            expires: datetime | None = None
            raw = item.get("expires_at")
            if isinstance(raw, str):
                try:
                    expires = datetime.fromisoformat(raw.replace("Z", "+00:00"))
                except ValueError:
                    expires = None
            name = str(item.get("model") or item.get("name") or "")
            out.append(
                RunningModel(
                    name=name,
                    path=Path(name),
                    size=int(item.get("size") or 0),
                    num_ctx=int(item.get("context_length") or 0),
                    gpu_layers=1 if item.get("size_vram") else 0,
                    offload=f"served by {self.server}",
                    embedding=False,
                    expires_at=expires,
                    active_requests=0,
                )
            )
        return out

    def unload(self, model: str | None = None) -> int:
        """Unload a model (or every one) on the server.

        Ollama: ``keep_alive: 0`` for the model (or every loaded one); other servers
        manage their own memory: 0.
        """
        if self.dialect() != "ollama":
            return 0
        if model is None:
            targets = [m.name for m in self.ps()]
        else:
            served = self.served_name(model)
            targets = [m.name for m in self.ps() if m.name == served]
        for name in targets:
            self.http.send("POST", "/api/generate", {"model": name, "keep_alive": 0})
        return len(targets)

    def close(self) -> None:
        """Close the sync HTTP client (the async one: ``await engine.aclose()``)."""
        self.http.close()

    async def aclose(self) -> None:
        """Close both HTTP clients."""
        await self.http.aclose()


class _HangUp:
    """Hang up a sync response when its request is cancelled, closed or past its deadline.

    A sync read blocks in the socket until bytes come (up to the read timeout), so a
    ``cancel`` event set, or ``stream.close()`` called, from another thread while the
    server is silent would wait for the read timeout (600 s by default). A daemon
    thread polls the signal every :attr:`TICK` seconds and shuts the socket down,
    which ends the blocked read at once and tells the server (it sees the
    disconnect). Responses without a socket (``httpx.MockTransport``) are left alone.
    """

    TICK = 0.05

    def __init__(self, signal: RequestSignal, response: httpx.Response) -> None:
        self.fired = False
        self._signal = signal
        self._response = response
        self._done = threading.Event()
        self._lock = threading.Lock()
        stream = response.extensions.get("network_stream")
        self._sock = stream.get_extra_info("socket") if stream is not None else None
        if self._sock is not None:
            threading.Thread(
                target=self._watch, args=(self._sock,), daemon=True, name="remote-hang-up"
            ).start()

    def _watch(self, sock: socket.socket) -> None:
        while not self._done.wait(self.TICK):
            if self._signal.is_set():
                with self._lock:
                    if self._done.is_set():
                        return
                    self.fired = True
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)
                return

    def stop(self) -> None:
        """The response is done with: stop watching (never hang up after this)."""
        with self._lock:
            self._done.set()


_NOT_NDJSON = ("text/html", "application/xml", "text/xml")
"""Types that are never Ollama's NDJSON (an error page of a proxy in front of the server)."""


def _streamable(response: httpx.Response, *, sse: bool) -> bool:
    """Whether a 2xx answer is a stream (SSE for OpenAI, NDJSON for Ollama), by its type."""
    ctype = str(response.headers.get("content-type", "")).split(";")[0].strip().lower()
    if sse:
        return ctype == "text/event-stream"  # what httpx-sse reads
    return ctype not in _NOT_NDJSON


def _sync_events(
    response: httpx.Response, *, sse: bool, done: Callable[[], None]
) -> Iterator[Mapping[str, Any]]:
    """The JSON objects of an SSE stream (``data:`` lines, until ``[DONE]``) or NDJSON.

    ``done`` is called on ``[DONE]`` (the stream's end marker).
    """
    if sse:
        from httpx_sse import EventSource

        for event in EventSource(response).iter_sse():
            data = event.data.strip()
            if not data:
                continue
            if data == "[DONE]":
                done()
                return
            yield _json_object(data)
    else:
        for line in response.iter_lines():
            if line.strip():
                yield _json_object(line)


async def _async_events(
    response: httpx.Response, *, sse: bool, done: Callable[[], None]
) -> AsyncIterator[Mapping[str, Any]]:
    """Async :func:`_sync_events`."""
    if sse:
        from httpx_sse import EventSource

        async for event in EventSource(response).aiter_sse():
            data = event.data.strip()
            if not data:
                continue
            if data == "[DONE]":
                done()
                return
            yield _json_object(data)
    else:
        async for line in response.aiter_lines():
            if line.strip():
                yield _json_object(line)


def _json_object(text: str) -> Mapping[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        raise ServerUnavailableError(
            f"The server sent a line that is not JSON: {text[:200]!r}; is base_url a "
            "model server (and the dialect right: LOCAL_LLM_REMOTE_DIALECT)?",
            url="",
        ) from None
    if not isinstance(value, Mapping):
        raise ServerUnavailableError(
            f"The server sent {type(value).__name__} where an object was expected.", url=""
        )
    return value
