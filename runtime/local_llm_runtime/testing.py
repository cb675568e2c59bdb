"""A scripted engine for tests: :class:`FakeEngine` replays answers and records requests.

:class:`FakeEngine` implements :class:`~local_llm_runtime.interface.EngineProtocol`
with no model, no file and no llama.cpp, so a chain, an agent or a RAG pipeline
built on the adapters can be tested in milliseconds, as LangChain's
``GenericFakeChatModel`` or simonw/llm's ``MockModel`` allow. Pass it as the
adapters' ``engine`` (``ChatLocal`` here; the prompt template and output parser
are LangChain's; the README's "One engine interface" section has the imports)::

    engine = FakeEngine(responses=["Paris is the capital.", FakeEngine.tool_call(
        "get_weather", {"city": "Paris"})])
    llm = ChatLocal(model="qwen2.5:7b", engine=engine)
    chain = ChatPromptTemplate.from_template("Capital of {country}?") | llm | StrOutputParser()
    assert chain.invoke({"country": "France"}) == "Paris is the capital."
    assert engine.requests[-1].messages == [
        {"role": "user", "content": "Capital of France?"}]
    call = llm.bind_tools([get_weather]).invoke("Weather in Paris?").tool_calls[0]
    assert call["args"] == {"city": "Paris"}

What it does, so tests exercise the same paths as with a real model:

* **Responses** are consumed in order, one per chat or completion request: a
  string (the answer), a :class:`FakeResponse` (text, reasoning, tool calls,
  finish reason, usage), a list of chunks replayed as given (``TextDelta``,
  ``ReasoningDelta``, ``ToolCallDelta``, at most one ``FinalChunk``, last), or
  an exception, raised when the stream is first read. When they run out the
  request raises :class:`FakeEngineError` naming the request, unless
  ``cycle=True`` (then they repeat from the first).
* **Streams** are the runtime's own :class:`~local_llm_runtime.streams.ChunkStream`
  and :class:`~local_llm_runtime.streams.AsyncChunkStream` (``with``, ``close``,
  ``async for``, ``timeout`` behave as the real ones). Scripted text and
  reasoning are streamed one fake token per chunk (``"Hello, world"`` is
  ``"Hello"``, ``","``, ``" world"``), so streaming callbacks see several tokens;
  every stream ends with exactly one :class:`~local_llm_runtime.types.FinalChunk`.
* **Usage** is computed unless scripted, with a deterministic fake tokenizer
  (:func:`fake_tokens`: a word with its leading spaces, or one punctuation
  character, is one token). Completion tokens: the tokens streamed (a tool
  call counts the tokens of its JSON). Prompt tokens: :meth:`FakeEngine.count_chat_tokens`
  of the request's messages: 3 per message plus its content's (and tool
  calls') tokens, plus the tools' JSON tokens, plus 3; a raw completion counts
  its prompt's tokens. Timings are zero.
* **Options honoured**: ``stop`` (the answer ends before the first stop
  sequence, finish ``stop``), ``num_predict``/``max_tokens`` (at most that many
  completion tokens, finish ``length``; a tool call that does not fit is
  dropped, as a cut call is in the real engine), ``cancel``/closing the stream
  (finish ``cancelled``), ``timeout`` (``RequestTimeoutError``),
  ``parallel_tool_calls=False`` (only the first call), ``reasoning``
  (``hide`` drops reasoning, ``inline`` puts it in the text as ``<think>...</think>``),
  ``logprobs``/``top_logprobs`` (every text and reasoning chunk carries one
  deterministic :class:`~local_llm_runtime.types.TokenLogprob` per fake token,
  :func:`fake_logprobs`; scripted chunks that carry their own keep them).
  Every option is validated as by the real engine (``InvalidOptionError``),
  and so is ``format`` as a JSON schema; the others (``temperature``, ``seed``...)
  are only recorded, and no grammar runs: script valid JSON yourself when a test
  uses ``format``.
* **Tool calls** must be answers to requests that offer tools: a scripted call
  of a tool the request did not offer (or with ``tool_choice="none"``) raises
  :class:`FakeEngineError`, which catches a chain that forgot ``bind_tools``.
  Arguments are checked against the tool's JSON schema, as by the real
  engine: a call whose arguments do not validate comes with ``error`` set
  (LangChain's ``invalid_tool_calls``).
* **Requests** are recorded in :attr:`FakeEngine.requests` as
  :class:`FakeRequest` (method, model, messages or prompt, tools, tool choice,
  format, options, reasoning, keep-alive, texts for embeddings...): generation
  and embedding calls only, not ``tokenize``/``model_info``/``ps``.
* **Embeddings** are deterministic bag-of-words vectors (``dimension`` wide,
  default 32, L2-normalized unless ``normalize=False``): each lower-cased word
  has a fixed pseudo-random direction (seeded by its hash), a text is the sum
  of its words'. The same text always gives the same vector, and texts sharing
  words are closer, so retrieval in a RAG test finds the document that shares
  the question's words. ``dimensions`` and ``truncate`` behave as in the real
  engine: a text longer than the model's context window (in :func:`fake_tokens`)
  is embedded from its first tokens, or refused with ``truncate=False``.
* **Models**: by default every name is a chat model with tools and a context
  of 4096 tokens (:meth:`FakeEngine.model_info`); with ``models={name: ModelInfo}``
  only those exist and any other name raises
  :class:`~local_llm_runtime.errors.ModelNotFoundError` (to test fallbacks).
  ``preload``, requests, ``ps`` and ``unload`` keep an in-memory list of
  "loaded" models (``keep_alive=0`` unloads after the request).
"""

from __future__ import annotations

import copy
import difflib
import functools
import hashlib
import json
import math
import random
import re
import threading
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from local_llm_runtime.errors import ContextLengthExceededError, ModelNotFoundError
from local_llm_runtime.interface import EngineProtocol, JsonFormat
from local_llm_runtime.options import validate_options
from local_llm_runtime.prompt.reasoning import ReasoningMode
from local_llm_runtime.prompt.tool_schema import (
    check_json_schema,
    normalize_tools,
    tool_schemas,
    validate_arguments,
)
from local_llm_runtime.streams import AsyncChunkStream, ChunkStream, RequestSignal
from local_llm_runtime.types import (
    ChatResult,
    Chunk,
    EmbeddingTask,
    FinalChunk,
    FinishReason,
    ModelInfo,
    ReasoningDelta,
    RunningModel,
    TextDelta,
    Timings,
    TokenLogprob,
    ToolCallDelta,
    ToolChoice,
    TopLogprob,
    Usage,
    aggregate,
)
from local_llm_runtime.validation import validate_messages, validate_prompt, validate_texts
from local_llm_runtime.vectors import check_dimensions, check_truncate, finish_vectors

__all__ = [
    "FakeEngine",
    "FakeEngineError",
    "FakeRequest",
    "FakeResponse",
    "FakeToolCall",
    "Response",
    "fake_logprobs",
    "fake_tokens",
]

_TOKEN = re.compile(r"\s*(?:\w+|[^\w\s])|\s+")
_WORD = re.compile(r"\w+")
_VOCAB = 50_000
_IDLE_TIMEOUT = 10.0


def fake_tokens(text: str) -> list[str]:
    """Split text into :class:`FakeEngine`'s tokens (``"".join`` gives the text back).

    A token is a word (letters, digits, ``_``) or one other character, with the
    spaces before it; trailing spaces are one more token.
    """
    return _TOKEN.findall(text)


class FakeEngineError(RuntimeError):
    """The script does not fit the request: no response left, or a tool call nobody offered."""


@dataclass(frozen=True)
class FakeToolCall:
    """A tool call a :class:`FakeResponse` makes.

    Attributes:
        name: The tool's name (must be one the request offers).
        arguments: The call's arguments.
        id: The call id; default ``call_<n>``, ``n`` counting the engine's calls from 0.
        error: Mark the call invalid (why its arguments are wrong); by default the
            arguments are checked against the tool's schema.
    """

    name: str
    arguments: Mapping[str, Any] = field(default_factory=dict)
    id: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class FakeResponse:
    """One scripted answer.

    Attributes:
        text: The answer text.
        reasoning: Reasoning streamed before the answer (``ReasoningDelta``).
        tool_calls: Calls streamed after the text.
        finish_reason: Default ``tool_calls`` when there are calls, else ``stop``
            (``stop`` and ``num_predict`` cuts override it).
        usage: Reported as is; default computed (see the module docs).
        timings: Reported as is; default all zero.
    """

    text: str = ""
    reasoning: str = ""
    tool_calls: Sequence[FakeToolCall] = ()
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    timings: Timings | None = None


Response = str | FakeResponse | Sequence[Chunk] | BaseException
"""What a :class:`FakeEngine` can be scripted with: see the module docs."""


@dataclass(frozen=True)
class FakeRequest:
    """One recorded call of a :class:`FakeEngine` (copies of what the caller passed).

    ``method`` is the method called: ``chat``, ``chat_stream``, ``achat``,
    ``achat_stream``, ``generate``, ``generate_stream``, ``agenerate``,
    ``agenerate_stream``, ``embed`` or ``aembed``. Fields a method does not
    take keep their defaults.
    """

    method: str
    model: str
    messages: list[dict[str, Any]] | None = None
    """Chat messages (``None`` for completions and embeddings)."""
    prompt: str | None = None
    """Completion prompt (``None`` for chats)."""
    system: str | None = None
    raw: bool = False
    tools: list[dict[str, Any]] | None = None
    tool_choice: ToolChoice = "auto"
    parallel_tool_calls: bool = True
    format: JsonFormat | None = None
    options: dict[str, Any] = field(default_factory=dict)
    """The options as passed (Ollama names)."""
    reasoning: ReasoningMode | None = None
    keep_alive: float | str | None = None
    timeout: float | None = None
    texts: list[str] | None = None
    """Embedding inputs."""
    task: EmbeddingTask | None = None
    prefix: str | None = None
    normalize: bool = True
    dimensions: int | None = None
    """Embedding ``dimensions`` (``None``: full width)."""
    truncate: bool = True
    """Embedding ``truncate``."""
    response: Response | None = None
    """The scripted response this request got (``None`` for embeddings)."""


@dataclass
class _Plan:
    """A request ready to stream: the body chunks and how the final chunk is made."""

    model: str
    body: list[Chunk]
    prompt_tokens: int
    finish: FinishReason | None
    usage: Usage | None
    timings: Timings | None
    error: BaseException | None = None
    delay: float = 0.0
    track: Callable[[int], None] | None = None


class FakeEngine:
    """An :class:`~local_llm_runtime.interface.EngineProtocol` that replays scripted answers.

    See :mod:`local_llm_runtime.testing` for what it honours and how usage is
    counted.

    Example:
        .. code-block:: python

            engine = FakeEngine(responses=[
                "Hello",
                FakeEngine.tool_call("get_weather", {"city": "Paris"}),
                FakeResponse(text="42", reasoning="6 times 7", usage=Usage(10, 3)),
            ])
            llm = ChatLocal(model="any-name", engine=engine)
            assert llm.invoke("Hi").content == "Hello"
            assert engine.requests[0].messages == [{"role": "user", "content": "Hi"}]

    Args:
        responses: The answers, in order (see :data:`Response`).
        cycle: Repeat the responses when they run out (default: raise
            :class:`FakeEngineError`).
        dimension: Width of the embedding vectors.
        models: The models that exist (``ModelInfo`` by name); ``None``: every
            name is a chat model with tools and a 4096-token context.
        chunk_delay: Seconds between chunks (a slow model, to test timeouts and
            cancellation; cancelling interrupts the wait).
    """

    def __init__(
        self,
        responses: Sequence[Response] = (),
        *,
        cycle: bool = False,
        dimension: int = 32,
        models: Mapping[str, ModelInfo] | None = None,
        chunk_delay: float = 0.0,
    ) -> None:
        if dimension < 1:
            raise ValueError(f"dimension must be at least 1, got {dimension}.")
        if not chunk_delay >= 0:
            raise ValueError(f"chunk_delay must be >= 0 seconds, got {chunk_delay!r}.")
        self.cycle = cycle
        self.chunk_delay = chunk_delay
        self.dimension = dimension
        self.models = dict(models) if models is not None else None
        self.requests: list[FakeRequest] = []
        """Every generation and embedding request, in call order."""
        self._responses: list[Response] = []
        self._next = 0
        self._calls = 0
        self._loaded: dict[tuple[str, bool], RunningModel] = {}
        self._open_streams = 0
        self._lock = threading.Lock()
        self.add_responses(*responses)

    # ---- scripting ------------------------------------------------------------

    @staticmethod
    def tool_call(
        name: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        text: str = "",
        id: str | None = None,
    ) -> FakeResponse:
        """A response that calls one tool (after ``text``, if any)."""
        return FakeResponse(text=text, tool_calls=(FakeToolCall(name, dict(arguments or {}), id),))

    def add_responses(self, *responses: Response) -> None:
        """Append answers to the script.

        Raises:
            TypeError: For something that is not a :data:`Response`.
            ValueError: For a chunk list whose ``FinalChunk`` is not last and only.
        """
        for response in responses:
            _check_response(response)
        with self._lock:
            self._responses.extend(responses)

    @property
    def remaining(self) -> int:
        """Responses not used yet (without cycling)."""
        with self._lock:
            return len(self._responses) - self._next

    @property
    def open_streams(self) -> int:
        """Streams started and neither finished nor closed (0 once a chain cleaned up)."""
        with self._lock:
            return self._open_streams

    def _stream_opened(self, delta: int) -> None:
        with self._lock:
            self._open_streams += delta

    @property
    def last_request(self) -> FakeRequest:
        """The latest recorded request.

        Raises:
            FakeEngineError: If there was none.
        """
        with self._lock:
            if not self.requests:
                raise FakeEngineError("FakeEngine has received no request yet.")
            return self.requests[-1]

    def __repr__(self) -> str:
        return (
            f"FakeEngine(responses={len(self._responses)}, used={self._next}, "
            f"requests={len(self.requests)})"
        )

    def __deepcopy__(self, memo: dict[int, Any]) -> FakeEngine:
        return self  # an engine is a shared service: copies of an adapter share it

    # ---- chat / completion ------------------------------------------------------

    def chat_stream(
        self,
        model: str,
        messages: Sequence[Mapping[str, Any]],
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: ToolChoice = "auto",
        parallel_tool_calls: bool = True,
        format: JsonFormat | None = None,
        options: Mapping[str, Any] | None = None,
        reasoning: ReasoningMode = "separate",
        keep_alive: float | str | None = None,
        cancel: threading.Event | None = None,
        timeout: float | None = None,
    ) -> ChunkStream:
        """Stream the next scripted answer (arguments as the interface's ``chat_stream``)."""
        plan = self._chat_plan(
            "chat_stream", model, messages, tools=tools, tool_choice=tool_choice,
            parallel_tool_calls=parallel_tool_calls, format=format, options=options,
            reasoning=reasoning, keep_alive=keep_alive, timeout=timeout,
        )  # fmt: skip
        return _open(plan, cancel, timeout)

    def chat(self, model: str, messages: Sequence[Mapping[str, Any]], **kwargs: Any) -> ChatResult:
        """The whole :meth:`chat_stream` answer."""
        cancel, timeout = kwargs.pop("cancel", None), kwargs.pop("timeout", None)
        plan = self._chat_plan("chat", model, messages, timeout=timeout, **kwargs)
        with _open(plan, cancel, timeout) as stream:
            return aggregate(stream)

    def generate_stream(
        self,
        model: str,
        prompt: str,
        *,
        system: str | None = None,
        raw: bool = False,
        format: JsonFormat | None = None,
        options: Mapping[str, Any] | None = None,
        keep_alive: float | str | None = None,
        cancel: threading.Event | None = None,
        timeout: float | None = None,
    ) -> ChunkStream:
        """Stream the next scripted answer as a completion (reasoning inline when ``raw``)."""
        plan = self._generate_plan(
            "generate_stream", model, prompt, system=system, raw=raw, format=format,
            options=options, keep_alive=keep_alive, timeout=timeout,
        )  # fmt: skip
        return _open(plan, cancel, timeout)

    def generate(self, model: str, prompt: str, **kwargs: Any) -> ChatResult:
        """The whole :meth:`generate_stream` answer."""
        cancel, timeout = kwargs.pop("cancel", None), kwargs.pop("timeout", None)
        plan = self._generate_plan("generate", model, prompt, timeout=timeout, **kwargs)
        with _open(plan, cancel, timeout) as stream:
            return aggregate(stream)

    def achat_stream(
        self,
        model: str,
        messages: Sequence[Mapping[str, Any]],
        *,
        cancel: threading.Event | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> AsyncChunkStream:
        """Async :meth:`chat_stream` (the request is recorded at the call)."""
        plan = self._chat_plan("achat_stream", model, messages, timeout=timeout, **kwargs)
        return _open_async(plan, cancel, timeout)

    async def achat(
        self, model: str, messages: Sequence[Mapping[str, Any]], **kwargs: Any
    ) -> ChatResult:
        """Async :meth:`chat`."""
        cancel, timeout = kwargs.pop("cancel", None), kwargs.pop("timeout", None)
        plan = self._chat_plan("achat", model, messages, timeout=timeout, **kwargs)
        async with _open_async(plan, cancel, timeout) as stream:
            return aggregate([chunk async for chunk in stream])

    def agenerate_stream(
        self,
        model: str,
        prompt: str,
        *,
        cancel: threading.Event | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> AsyncChunkStream:
        """Async :meth:`generate_stream`."""
        plan = self._generate_plan("agenerate_stream", model, prompt, timeout=timeout, **kwargs)
        return _open_async(plan, cancel, timeout)

    async def agenerate(self, model: str, prompt: str, **kwargs: Any) -> ChatResult:
        """Async :meth:`generate`."""
        cancel, timeout = kwargs.pop("cancel", None), kwargs.pop("timeout", None)
        plan = self._generate_plan("agenerate", model, prompt, timeout=timeout, **kwargs)
        async with _open_async(plan, cancel, timeout) as stream:
            return aggregate([chunk async for chunk in stream])

    # ---- embeddings ---------------------------------------------------------------

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
        """Deterministic bag-of-words vectors, one per text (``prefix`` is prepended).

        A text is :func:`fake_tokens`; one longer than the model's context window
        (``num_ctx``, capped by its ``context_length``) is cut to its first tokens, or
        refused with ``truncate=False``, as the in-process engine does. ``dimensions``
        follows :func:`local_llm_runtime.vectors.finish_vectors`.

        Raises:
            InvalidOptionError: For one string instead of a list, bad options, or a
                ``dimensions`` below 1 or above :attr:`dimension`.
            ContextLengthExceededError: A text over the context with ``truncate=False``.
            ModelNotFoundError: For a model not in ``models`` (when given).
        """
        return self._embed(
            "embed", model, texts, normalize, task, prefix, options, keep_alive,
            dimensions=dimensions, truncate=truncate,
        )  # fmt: skip

    async def aembed(self, model: str, texts: Sequence[str], **kwargs: Any) -> list[list[float]]:
        """Async :meth:`embed`."""
        return self._embed(
            "aembed", model, texts, kwargs.pop("normalize", True), kwargs.pop("task", None),
            kwargs.pop("prefix", None), kwargs.pop("options", None), kwargs.pop("keep_alive", None),
            dimensions=kwargs.pop("dimensions", None), truncate=kwargs.pop("truncate", True),
            **kwargs,
        )  # fmt: skip

    # ---- tokens -----------------------------------------------------------------------

    def tokenize(self, model: str, text: str, *, special: bool = False) -> list[int]:
        """Token ids of :func:`fake_tokens` (a CRC of each token; ``special`` is ignored)."""
        self.model_info(model)
        return [zlib.crc32(piece.encode("utf-8")) % _VOCAB + 1 for piece in fake_tokens(text)]

    def count_chat_tokens(
        self,
        model: str,
        messages: Sequence[Mapping[str, Any]],
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> int:
        """Prompt tokens of a chat with these messages: equal to its ``usage.prompt_tokens``."""
        self.model_info(model)
        return _prompt_tokens(validate_messages(messages), normalize_tools(tools))

    # ---- models -------------------------------------------------------------------------

    def model_info(self, model: str) -> ModelInfo:
        """The model's info: from ``models``, else a chat model with tools and 4096 tokens.

        Raises:
            ModelNotFoundError: ``models`` was given and does not name ``model``.
        """
        if self.models is None:
            return ModelInfo(
                name=model,
                kind="chat",
                capabilities=("completion", "tools"),
                context_length=4096,
                embedding_length=self.dimension,
                architecture="fake",
            )
        info = self.models.get(model)
        if info is None:
            raise ModelNotFoundError(
                f"FakeEngine has no model {model!r}; add it to FakeEngine(models=...).",
                difflib.get_close_matches(model, list(self.models), n=3),
            )
        return info

    def preload(
        self,
        model: str,
        *,
        options: Mapping[str, Any] | None = None,
        embedding: bool = False,
        keep_alive: float | str | None = None,
    ) -> RunningModel:
        """Mark the model loaded (no file is read); ``keep_alive=0`` unloads it instead."""
        checked = validate_options(options or {})
        return self._load(model, embedding, checked, keep_alive)

    def ps(self) -> list[RunningModel]:
        """The models preloaded or used by requests and not unloaded since."""
        with self._lock:
            return list(self._loaded.values())

    def unload(self, model: str | None = None) -> int:
        """Forget a model's loaded instances (chat and embedding), or all; returns how many."""
        with self._lock:
            keys = [key for key in self._loaded if model is None or key[0] == model]
            for key in keys:
                del self._loaded[key]
            return len(keys)

    # ---- internals --------------------------------------------------------------------------

    def _load(
        self,
        model: str,
        embedding: bool,
        options: Mapping[str, Any],
        keep_alive: float | str | None,
    ) -> RunningModel:
        info = self.model_info(model)
        running = RunningModel(
            name=model,
            path=Path(model),
            size=0,
            num_ctx=info.context_window(options.get("num_ctx")),
            gpu_layers=0,
            offload="FakeEngine: nothing is loaded",
            embedding=embedding,
            expires_at=None,
            active_requests=0,
        )
        ttl = (
            validate_options({"keep_alive": keep_alive})["keep_alive"]
            if keep_alive is not None
            else None
        )
        with self._lock:
            if ttl == 0:
                self._loaded.pop((model, embedding), None)
            else:
                self._loaded[(model, embedding)] = running
        return running

    def _take(self, method: str, model: str) -> Response:
        """The next response (under the lock)."""
        if self._next >= len(self._responses):
            if self.cycle and self._responses:
                self._next = 0
            else:
                raise FakeEngineError(
                    f"FakeEngine has no response left for request #{len(self.requests) + 1} "
                    f"({method}, model {model!r}): it was given {len(self._responses)}. "
                    "Add responses (FakeEngine(responses=[...]) or add_responses())"
                    + (
                        "; cycle=True repeats them, but there are none."
                        if self.cycle
                        else ", or pass cycle=True to repeat them."
                    )
                )
        response = self._responses[self._next]
        self._next += 1
        return response

    def _record(self, request: FakeRequest, *, scripted: bool) -> Response | None:
        with self._lock:
            response = self._take(request.method, request.model) if scripted else None
            self.requests.append(replace(request, response=response))
            return response

    def _chat_plan(
        self,
        method: str,
        model: str,
        messages: Sequence[Mapping[str, Any]],
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: ToolChoice = "auto",
        parallel_tool_calls: bool = True,
        format: JsonFormat | None = None,
        options: Mapping[str, Any] | None = None,
        reasoning: ReasoningMode = "separate",
        keep_alive: float | str | None = None,
        timeout: float | None = None,
    ) -> _Plan:
        checked = validate_messages(messages)
        normalized = normalize_tools(tools)
        if format is not None:
            check_json_schema(format, "format")
        valid = validate_options(options or {})
        self._load(model, False, valid, keep_alive)
        response = self._record(
            FakeRequest(
                method=method, model=model, messages=copy.deepcopy(checked),
                tools=copy.deepcopy([dict(t) for t in tools]) if tools is not None else None,
                tool_choice=tool_choice, parallel_tool_calls=parallel_tool_calls,
                format=copy.deepcopy(format), options=dict(options or {}), reasoning=reasoning,
                keep_alive=keep_alive, timeout=timeout,
            ),
            scripted=True,
        )  # fmt: skip
        offered = normalized if tool_choice != "none" else []
        return self._plan(
            model, response, _prompt_tokens(checked, normalized), valid, reasoning, offered,
            parallel_tool_calls,
        )  # fmt: skip

    def _generate_plan(
        self,
        method: str,
        model: str,
        prompt: str,
        *,
        system: str | None = None,
        raw: bool = False,
        format: JsonFormat | None = None,
        options: Mapping[str, Any] | None = None,
        keep_alive: float | str | None = None,
        timeout: float | None = None,
    ) -> _Plan:
        validate_prompt(prompt)
        if format is not None:
            check_json_schema(format, "format")
        valid = validate_options(options or {})
        self._load(model, False, valid, keep_alive)
        response = self._record(
            FakeRequest(
                method=method, model=model, prompt=prompt, system=system, raw=raw,
                format=copy.deepcopy(format), options=dict(options or {}),
                keep_alive=keep_alive, timeout=timeout,
            ),
            scripted=True,
        )  # fmt: skip
        if raw:
            prompt_tokens = len(fake_tokens(prompt))
        else:
            msgs = [{"role": "system", "content": system}] if system else []
            prompt_tokens = _prompt_tokens([*msgs, {"role": "user", "content": prompt}], [])
        mode: ReasoningMode = "inline" if raw else "separate"
        return self._plan(model, response, prompt_tokens, valid, mode, [], True)

    def _plan(
        self,
        model: str,
        response: Response | None,
        prompt_tokens: int,
        options: Mapping[str, Any],
        reasoning: ReasoningMode,
        tools: list[dict[str, Any]],
        parallel: bool,
    ) -> _Plan:
        if isinstance(response, BaseException):
            return _Plan(model, [], prompt_tokens, None, None, None, error=response)
        finish: FinishReason | None = None
        usage: Usage | None = None
        timings: Timings | None = None
        if isinstance(response, str):
            body: list[Chunk] = [TextDelta(piece) for piece in fake_tokens(response)]
        elif isinstance(response, FakeResponse):
            body = [ReasoningDelta(piece) for piece in fake_tokens(response.reasoning)]
            body += [TextDelta(piece) for piece in fake_tokens(response.text)]
            body += [self._call_delta(i, call) for i, call in enumerate(response.tool_calls)]
            finish, usage, timings = response.finish_reason, response.usage, response.timings
        else:
            body = [c for c in response or () if not isinstance(c, FinalChunk)]
            final = next((c for c in response or () if isinstance(c, FinalChunk)), None)
            if final is not None:
                finish, usage, timings = final.finish_reason, final.usage, final.timings
        body = _check_tool_calls(body, tools, parallel)
        body = _apply_reasoning(body, reasoning)
        body, cut = _cut(body, options.get("stop") or [], options.get("num_predict"))
        if options.get("logprobs"):
            body = [_with_logprobs(c, int(options.get("top_logprobs") or 0)) for c in body]
        if cut is not None:
            finish = cut
        elif finish is None:
            finish = "tool_calls" if any(isinstance(c, ToolCallDelta) for c in body) else "stop"
        return _Plan(
            model, body, prompt_tokens, finish, usage, timings,
            delay=self.chunk_delay, track=self._stream_opened,
        )  # fmt: skip

    def _call_delta(self, index: int, call: FakeToolCall) -> ToolCallDelta:
        with self._lock:
            number = self._calls
            self._calls += 1
        return ToolCallDelta(
            index=index,
            id=call.id or f"call_{number}",
            name=call.name,
            arguments=dict(call.arguments),
            error=call.error,
        )

    def _embed(
        self,
        method: str,
        model: str,
        texts: Sequence[str],
        normalize: bool,
        task: EmbeddingTask | None,
        prefix: str | None,
        options: Mapping[str, Any] | None,
        keep_alive: float | str | None,
        *,
        dimensions: int | None = None,
        truncate: bool = True,
        **unknown: Any,
    ) -> list[list[float]]:
        if unknown:
            raise TypeError(f"{method}() got unexpected keyword arguments: {sorted(unknown)}.")
        checked = validate_texts(texts)
        valid = validate_options(options or {})
        check_dimensions(dimensions)
        check_truncate(truncate)
        window = self.model_info(model).context_window(valid.get("num_ctx"))
        fulls = [prefix + t if prefix and not t.startswith(prefix) else t for t in checked]
        pieces = [fake_tokens(text) for text in fulls]
        if not truncate:
            for tokens in pieces:
                if len(tokens) > window:
                    raise ContextLengthExceededError(len(tokens), window, embedding=True)
        self._load(model, True, valid, keep_alive)
        self._record(
            FakeRequest(
                method=method, model=model, texts=list(checked), options=dict(options or {}),
                keep_alive=keep_alive, task=task, prefix=prefix, normalize=normalize,
                dimensions=dimensions, truncate=truncate,
            ),
            scripted=False,
        )  # fmt: skip
        vectors = [_bag_of_words("".join(tokens[:window]), self.dimension) for tokens in pieces]
        return finish_vectors(vectors, dimensions=dimensions, normalize=normalize)


# ---- pure helpers -------------------------------------------------------------------------


def _check_response(response: object) -> None:
    if isinstance(response, str | FakeResponse | BaseException):
        return
    if not isinstance(response, Sequence):
        raise TypeError(
            "A FakeEngine response is a string, a FakeResponse, a list of chunks or an "
            f"exception, not {type(response).__name__}."
        )
    for i, chunk in enumerate(response):
        if not isinstance(chunk, TextDelta | ReasoningDelta | ToolCallDelta | FinalChunk):
            raise TypeError(f"Chunk {i} of a scripted response is not a chunk: {chunk!r:.80}.")
        if isinstance(chunk, FinalChunk) and i != len(response) - 1:
            raise ValueError(
                f"A scripted chunk list may hold one FinalChunk, at the end (found one at {i})."
            )


def _tokens_of(chunk: Chunk) -> int:
    if isinstance(chunk, TextDelta | ReasoningDelta):
        return len(fake_tokens(chunk.text))
    if isinstance(chunk, ToolCallDelta):
        return len(fake_tokens(json.dumps({"name": chunk.name, "arguments": chunk.arguments})))
    return 0


def _prompt_tokens(messages: Sequence[Mapping[str, Any]], tools: Sequence[Any]) -> int:
    total = 3 + (len(fake_tokens(json.dumps(list(tools)))) if tools else 0)
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            content = "".join(p if isinstance(p, str) else str(p.get("text", "")) for p in content)
        total += 3 + len(fake_tokens(content or ""))
        if message.get("tool_calls"):
            total += len(fake_tokens(json.dumps(message["tool_calls"], default=str)))
    return total


def _check_tool_calls(
    body: list[Chunk], tools: list[dict[str, Any]], parallel: bool
) -> list[Chunk]:
    """Refuse calls of tools not offered; flag invalid arguments; one call if not parallel."""
    schemas = tool_schemas(tools) if tools else {}
    out: list[Chunk] = []
    for chunk in body:
        if isinstance(chunk, ToolCallDelta):
            if chunk.name not in schemas:
                offered = ", ".join(sorted(schemas)) or "none"
                raise FakeEngineError(
                    f"The script calls tool {chunk.name!r} but the request offers {offered} "
                    "(did the chain bind its tools? tool_choice='none' offers none)."
                )
            error = chunk.error or validate_arguments(schemas[chunk.name], chunk.arguments)
            out.append(replace(chunk, error=error))
        else:
            out.append(chunk)
        if isinstance(chunk, ToolCallDelta) and not parallel:
            break  # the real engine stops after the one allowed call
    return out


def _apply_reasoning(body: list[Chunk], mode: ReasoningMode) -> list[Chunk]:
    if mode == "separate":
        return body
    out: list[Chunk] = []
    inside = False
    for chunk in body:
        if isinstance(chunk, ReasoningDelta):
            if mode == "inline":
                out.append(TextDelta(("" if inside else "<think>") + chunk.text))
                inside = True
            continue
        if inside:
            out.append(TextDelta("</think>"))
            inside = False
        out.append(chunk)
    if inside:
        out.append(TextDelta("</think>"))
    return out


def _cut(
    body: list[Chunk], stops: Sequence[str], num_predict: int | None
) -> tuple[list[Chunk], FinishReason | None]:
    """Apply stop sequences, then the token budget, as the real engine's limits do."""
    cut: FinishReason | None = None
    if stops:
        text = "".join(c.text for c in body if isinstance(c, TextDelta | ReasoningDelta))
        ends = [i for i in (text.find(stop) for stop in stops if stop) if i >= 0]
        if ends:
            budget = min(ends)
            kept: list[Chunk] = []
            for chunk in body:
                if not isinstance(chunk, TextDelta | ReasoningDelta):
                    kept.append(chunk)
                    continue
                if budget <= 0:
                    break
                piece = chunk.text[:budget]
                budget -= len(piece)
                if piece:
                    kept.append(replace(chunk, text=piece))
            body, cut = kept, "stop"
    if num_predict is not None and num_predict >= 0:
        left = num_predict
        kept = []
        for chunk in body:
            need = _tokens_of(chunk)
            if need <= left:
                kept.append(chunk)
                left -= need
                continue
            if isinstance(chunk, TextDelta | ReasoningDelta) and left > 0:
                kept.append(replace(chunk, text="".join(fake_tokens(chunk.text)[:left])))
            return kept, "length"
    return body, cut


def fake_logprobs(text: str, top_logprobs: int = 0) -> tuple[TokenLogprob, ...]:
    """:class:`FakeEngine`'s log-probabilities of a text: one per fake token, deterministic.

    Each token's probability ``p`` comes from a hash of its text (between 0.36 and
    0.99); it is the most likely token, and alternative ``i`` (``<alt1>``,
    ``<alt2>``...) has ``(1 - p) / 2**i``, so the list is sorted and sums below 1.
    """
    out = []
    for piece in fake_tokens(text):
        raw = piece.encode("utf-8")
        logprob = -0.01 - (zlib.crc32(raw) % 1000) / 1000
        rest = 1.0 - math.exp(logprob)
        top = [TopLogprob(piece, logprob, tuple(raw))][:top_logprobs]
        top += [
            TopLogprob(f"<alt{i}>", math.log(rest / 2**i), tuple(f"<alt{i}>".encode()))
            for i in range(1, top_logprobs)
        ]
        out.append(TokenLogprob(piece, logprob, tuple(raw), tuple(top)))
    return tuple(out)


def _with_logprobs(chunk: Chunk, top_logprobs: int) -> Chunk:
    if isinstance(chunk, TextDelta | ReasoningDelta) and not chunk.logprobs:
        return replace(chunk, logprobs=fake_logprobs(chunk.text, top_logprobs))
    return chunk


def _stream(plan: _Plan, signal: RequestSignal) -> Iterator[Chunk]:
    signal.model = plan.model
    if plan.error is not None:
        raise plan.error
    if plan.track is not None:
        plan.track(1)
    try:
        yield from _chunks(plan, signal)
    finally:
        if plan.track is not None:
            plan.track(-1)


def _chunks(plan: _Plan, signal: RequestSignal) -> Iterator[Chunk]:
    completion = 0
    finish: FinishReason | None = plan.finish
    for i, chunk in enumerate(plan.body):
        if i and plan.delay:
            signal.wait(plan.delay)
        if signal.is_set():
            finish = "cancelled"
            break
        completion += _tokens_of(chunk)
        yield chunk
    usage = plan.usage if plan.usage is not None and finish != "cancelled" else None
    usage = usage or Usage(prompt_tokens=plan.prompt_tokens, completion_tokens=completion)
    timings = plan.timings or Timings(
        0.0, 0.0, 0.0, 0.0, prompt_tokens=usage.prompt_tokens, sampled_tokens=completion
    )
    yield FinalChunk(finish_reason=finish or "stop", usage=usage, timings=timings, model=plan.model)


def _open(plan: _Plan, cancel: threading.Event | None, timeout: float | None) -> ChunkStream:
    if isinstance(cancel, RequestSignal) and timeout is None:
        signal = cancel
    else:
        signal = RequestSignal(cancel, timeout)
    signal.model = plan.model
    return ChunkStream(_stream(plan, signal), signal, idle_timeout=_IDLE_TIMEOUT)


def _open_async(
    plan: _Plan, cancel: threading.Event | None, timeout: float | None
) -> AsyncChunkStream:
    return AsyncChunkStream(
        lambda signal: _open(plan, signal, None), RequestSignal(cancel, timeout)
    )


@functools.lru_cache(maxsize=4096)
def _word_vector(word: str, dimension: int) -> tuple[float, ...]:
    seed = int.from_bytes(hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest(), "big")
    rng = random.Random(seed)  # noqa: S311 - test vectors, not secrets
    return tuple(rng.gauss(0.0, 1.0) for _ in range(dimension))


def _bag_of_words(text: str, dimension: int) -> list[float]:
    words = _WORD.findall(text.lower()) or [""]
    vector = [0.0] * dimension
    for word in words:
        for i, x in enumerate(_word_vector(word, dimension)):
            vector[i] += x
    return vector


if TYPE_CHECKING:  # mypy checks FakeEngine against the interface on every run
    _conforms: EngineProtocol = FakeEngine()
