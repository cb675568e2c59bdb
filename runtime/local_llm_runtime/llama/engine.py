"""Generation: chat, completion and embeddings over the shared pool.

One pipeline serves every request kind::

    options -> load options + sampling -> lease a pooled model (FIFO)
    -> render the model's own chat template -> tokenize -> context check
    -> llama.cpp token loop (grammar for forced tools / structured output)
    -> bytes -> text -> stop sequences -> <think> split -> tool-call parse
    -> typed chunks (text / reasoning / tool call / final with usage+timings)

Non-streaming calls aggregate the same stream, so usage is identical. Async
calls run the same iterator in a worker thread and hand chunks to the event
loop through a queue; cancelling the task stops generation within a token.
"""

from __future__ import annotations

import functools
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from local_llm_runtime.errors import (
    ContextLengthExceededError,
    GenerationError,
    InvalidOptionError,
)
from local_llm_runtime.logprobs import LogprobCarrier
from local_llm_runtime.options import split_by_destination, validate_options
from local_llm_runtime.prompt.chat_template import ChatTemplate
from local_llm_runtime.prompt.families import traits_for
from local_llm_runtime.prompt.output import OutputPipeline as _OutputPipeline
from local_llm_runtime.prompt.output import Request as _Request
from local_llm_runtime.prompt.output import tool_names as _tool_names
from local_llm_runtime.prompt.reasoning import ReasoningMode
from local_llm_runtime.prompt.tool_calls import (
    json_schema_gbnf,
    tool_call_gbnf,
)
from local_llm_runtime.prompt.tool_schema import check_json_schema, normalize_tools
from local_llm_runtime.settings import RuntimeSettings
from local_llm_runtime.store.gguf_meta import read_gguf_info, summarize
from local_llm_runtime.store.library import LocalModel, ModelLibrary
from local_llm_runtime.streams import (
    AsyncChunkStream,
    RequestSignal,
    WholeResults,
    run_blocking,
    stream_method,
)
from local_llm_runtime.types import (
    Chunk,
    EmbeddingTask,
    FinalChunk,
    FinishReason,
    ModelInfo,
    RunningModel,
    Timings,
    ToolChoice,
    Usage,
)
from local_llm_runtime.validation import validate_messages, validate_prompt, validate_texts
from local_llm_runtime.vectors import check_dimensions, check_truncate, finish_vectors

# The modules that import llama_cpp (a native library, ~0.3 s) are imported where
# they are used -- the first load or request -- so constructing an engine (every
# adapter's default) imports none of them.
if TYPE_CHECKING:
    import llama_cpp

    from local_llm_runtime.llama.batching import SlotRun
    from local_llm_runtime.llama.pool import LoadedModel, LoadOptions, ModelPool
    from local_llm_runtime.llama.sampling import SamplingOptions

__all__ = [
    "EmbeddingTask",
    "Engine",
    "LlamaEngine",
    "SamplingOptions",
    "ToolChoice",
    "default_engine",
    "split_options",
]


T = TypeVar("T")


def split_options(
    *layers: Mapping[str, Any] | None,
) -> tuple[LoadOptions, SamplingOptions, float | None]:
    """Validate Ollama-named options and split them by what they affect.

    Later mappings override earlier ones (model defaults, then the request). Where
    each option goes is the ``destination`` of its
    :class:`~local_llm_runtime.options.ModelOptions` field.

    Returns:
        Load options (the pool key), sampling options and ``keep_alive``.
    """
    from local_llm_runtime.llama.pool import LoadOptions
    from local_llm_runtime.llama.sampling import SamplingOptions

    merged: dict[str, Any] = {}
    for layer in layers:
        if layer:
            merged.update(validate_options({k: v for k, v in layer.items() if v is not None}))
    parts = split_by_destination(merged)
    sampling = parts["sampling"]
    if "stop" in sampling:
        sampling["stop"] = tuple(sampling["stop"])
    if sampling.get("seed") == -1:  # Ollama's (and llama.cpp's) "a random seed"
        del sampling["seed"]
    return (
        LoadOptions(**parts["load"]),
        SamplingOptions(**sampling),
        parts["request"].get("keep_alive"),
    )


@dataclass(frozen=True)
class _Prepared:
    """A request ready for the model: rendered, tokenized, grammar built and checked."""

    template: ChatTemplate
    request: _Request
    tokens: list[int]
    grammar: str | None


def _check_grammar(llm: llama_cpp.Llama, grammar: str) -> None:
    """Parse a GBNF grammar against the vocabulary now, as the sampler will under the lease.

    Raises:
        InvalidOptionError: If llama.cpp rejects it.
    """
    import llama_cpp

    sampler = llama_cpp.llama_sampler_init_grammar(
        llm._model.vocab, grammar.encode("utf-8"), b"root"
    )
    if not sampler:
        raise InvalidOptionError(
            "The tool or output schema could not be turned into a grammar llama.cpp "
            "accepts; simplify the JSON schema."
        )
    llama_cpp.llama_sampler_free(sampler)


def _is_eog(llm: llama_cpp.Llama, token: int) -> bool:
    import llama_cpp  # already imported by the load: a dictionary lookup

    return bool(llama_cpp.llama_vocab_is_eog(llm._model.vocab, token))


class LlamaEngine(WholeResults):
    """The in-process backend: llama.cpp generation over a shared :class:`ModelPool`.

    Implements :class:`~local_llm_runtime.interface.EngineProtocol`. Also exported
    as ``local_llm_runtime.Engine`` (its name before there were other backends).

    Args:
        settings: Runtime settings (environment when omitted).
        library: Resolves names to files (pulls on first use, like ``ollama run``).
        pool: The loaded-model pool; share one per process (see :func:`default_engine`).
    """

    def __init__(
        self,
        settings: RuntimeSettings | None = None,
        *,
        library: ModelLibrary | None = None,
        pool: ModelPool | None = None,
    ) -> None:
        self.settings = settings or RuntimeSettings.from_env()
        self.library = library or ModelLibrary(self.settings)
        self._pool = pool
        self._pool_lock = threading.Lock()

    @property
    def pool(self) -> ModelPool:
        """The loaded-model pool, created on first use (it imports llama_cpp)."""
        if self._pool is None:
            with self._pool_lock:
                if self._pool is None:
                    from local_llm_runtime.llama.pool import ModelPool

                    self._pool = ModelPool(self.settings)
        return self._pool

    @pool.setter
    def pool(self, pool: ModelPool) -> None:
        self._pool = pool

    # ---- public: chat / completion ------------------------------------------

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
        """Stream a chat response as typed chunks.

        Returns a :class:`~local_llm_runtime.streams.ChunkStream`: iterate it,
        and close it (or use ``with``) if you stop early. An unread stream keeps
        the model only until another request for it has waited
        ``stream_idle_timeout`` seconds (then reading it raises
        :class:`~local_llm_runtime.errors.StreamReclaimedError`).

        Args:
            model: Any model reference (``qwen2.5:7b``, ``hf.co/...``, a path).
            messages: OpenAI-style messages (system/user/assistant/tool, with
                ``tool_calls`` and ``tool_call_id`` where relevant).
            tools: OpenAI-style function tools, rendered by the model's template.
            tool_choice: ``auto``, ``none``, ``required``/``any`` (some tool),
                or a tool name; the last two are enforced by a grammar.
            parallel_tool_calls: ``False`` allows at most one call: the grammar
                admits one, and generation stops once the first call is parsed.
            format: A JSON schema (or ``"json"``) the answer must follow.
            options: Ollama-named options (temperature, num_ctx, seed, stop, ...).
            reasoning: Where ``<think>`` goes: ``separate`` (reasoning chunks),
                ``hide`` or ``inline``.
            keep_alive: How long the model stays loaded after this request.
            cancel: Set it to stop generation within a token (a request still
                waiting for the model leaves the queue; finish ``cancelled``).
            timeout: Seconds for the whole request, counted from this call:
                resolve/pull, prompt preparation, load, queue, prompt and
                generation. Past it, reading the stream raises
                :class:`~local_llm_runtime.errors.RequestTimeoutError` naming the
                time of each phase (chunks read before stay read; an unfinished
                tool call is never yielded). ``None``: no limit.

        Yields:
            Text, reasoning and tool-call chunks, then one :class:`FinalChunk`.

        Message text (every role, tool results, tool-call arguments, tool
        definitions) is tokenized as plain text: only the chat template's own
        markup becomes control tokens.

        Raises:
            TemplateError, InvalidOptionError, ContextLengthExceededError: By
                this call itself, before the model is loaded or waited for, when
                the template fails, the schema cannot become a grammar, or the
                prompt is empty or does not fit the context.
            InvalidOptionError: Before any load, for malformed ``messages`` (see
                :func:`~local_llm_runtime.validation.validate_messages`: empty,
                not mappings, no role, content neither text nor text parts) or
                options.
            RequestTimeoutError: Past ``timeout`` (when the stream is read).
            StreamReclaimedError: Read after it was reclaimed as idle.
        """
        del timeout  # @stream_method turned it into the deadline of ``cancel``
        checked = validate_messages(messages)
        if format is not None:
            check_json_schema(format, "format")
        local = self.library.resolve(model)
        load, sampling, model_keep_alive = split_options(local.parameters, options)
        ttl = self._keep_alive(keep_alive, model_keep_alive)
        tools = normalize_tools(tools)  # every consumer below reads this one form
        choice = "required" if tool_choice == "any" else tool_choice
        if choice not in ("auto", "none", "required") and choice not in _tool_names(tools):
            raise InvalidOptionError(
                f"tool_choice {tool_choice!r} names no offered tool; offered: "
                f"{', '.join(sorted(_tool_names(tools))) or 'none'}."
            )
        msgs = _with_default_system(local, checked)
        return self._run(
            local,
            load,
            sampling,
            ttl,
            cancel,
            lambda template: _Request(
                prompt=template.render(msgs, tools=tools if choice != "none" else None),
                tools=tools if choice != "none" else (),
                tool_choice=choice,
                parallel_tool_calls=parallel_tool_calls,
                schema=format,
                reasoning=reasoning,
                starts_thinking=template.opens_thinking,
                tool_parser=bool(tools) and choice != "none",
            ),
        )

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
        """Stream a completion (Ollama's ``generate``).

        Unless ``raw`` is set the prompt is wrapped as a user message in the
        model's chat template (with ``system`` or the model's default system
        prompt), as Ollama does; ``raw=True`` continues the text as is.
        Returns a :class:`~local_llm_runtime.streams.ChunkStream`; ``cancel``
        and ``timeout`` work as in :meth:`chat_stream`.

        Special tokens: a wrapped prompt is a message, so control-token text in
        it (``<|im_end|>``, ``<|eot_id|>``...) is tokenized as plain text, as in
        :meth:`chat_stream`. A ``raw`` prompt is the caller's own full prompt:
        such text in it *is* parsed into control tokens (Ollama's ``raw``), so
        never put untrusted text into a raw prompt unescaped.

        Raises:
            TemplateError, InvalidOptionError, ContextLengthExceededError: At
                once, before the model is loaded or waited for, when the prompt
                cannot be prepared (see :meth:`chat_stream`).
        """
        del timeout  # @stream_method turned it into the deadline of ``cancel``
        validate_prompt(prompt)
        if format is not None:
            check_json_schema(format, "format")
        local = self.library.resolve(model)
        load, sampling, model_keep_alive = split_options(local.parameters, options)
        ttl = self._keep_alive(keep_alive, model_keep_alive)
        system = system if system is not None else local.system

        def build(template: ChatTemplate) -> _Request:
            if raw:
                return _Request(prompt=prompt, schema=format, reasoning="inline", raw=True)
            msgs = [{"role": "system", "content": system}] if system else []
            msgs.append({"role": "user", "content": prompt})
            return _Request(
                prompt=template.render(msgs),
                schema=format,
                starts_thinking=template.opens_thinking,
            )

        return self._run(local, load, sampling, ttl, cancel, build)

    # ---- public: async --------------------------------------------------------

    def achat_stream(
        self,
        model: str,
        messages: Sequence[Mapping[str, Any]],
        *,
        cancel: threading.Event | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> AsyncChunkStream:
        """Async :meth:`chat_stream`: the request runs on the bounded worker pool.

        Returns an :class:`~local_llm_runtime.streams.AsyncChunkStream`
        (``async for``, ``async with``, ``aclose()``). Cancelling the consuming
        task (or closing the stream) stops generation within a token, and a
        request still waiting for the model leaves the queue; so does setting
        ``cancel``. ``timeout`` counts from this call.
        """
        return AsyncChunkStream(
            lambda signal: self.chat_stream(model, messages, cancel=signal, **kwargs),
            RequestSignal(cancel, timeout),
        )

    def agenerate_stream(
        self,
        model: str,
        prompt: str,
        *,
        cancel: threading.Event | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> AsyncChunkStream:
        """Async :meth:`generate_stream` (see :meth:`achat_stream`)."""
        return AsyncChunkStream(
            lambda signal: self.generate_stream(model, prompt, cancel=signal, **kwargs),
            RequestSignal(cancel, timeout),
        )

    # ---- public: embeddings ---------------------------------------------------

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
        """Embed texts: exactly one vector per input, in order.

        Runs on a separate pool entry (``embedding=True``, the model's pooling
        or mean pooling for generative models), batched by llama.cpp.

        Every text gets a vector (see :mod:`local_llm_runtime.llama.embedding`): an
        empty text is embedded as the model's BOS token (EOS without one), the
        same vector alone or in any batch; a text longer than ``num_ctx`` tokens
        is truncated to its first ``num_ctx`` tokens (``truncate=False`` raises).

        Args:
            model: Any model reference.
            texts: The texts.
            normalize: L2-normalize every vector.
            task: ``"query"`` or ``"document"``: models trained with task
                prefixes (nomic-embed-text: ``search_query: `` /
                ``search_document: ``, see :mod:`~local_llm_runtime.prompt.families`) get
                theirs, unless a text already starts with it.
            prefix: An explicit prefix instead (``""`` for none).
            options: Load options (``num_ctx``, ``num_gpu``, ``num_thread``).
            keep_alive: How long the model stays loaded after this request.
            dimensions: Keep the first this many values, then normalize (Matryoshka;
                :func:`~local_llm_runtime.vectors.finish_vectors`); ``None``: all.
            truncate: Cut a text longer than ``num_ctx`` tokens; ``False`` raises.

        Raises:
            InvalidOptionError: If ``texts`` is one string or holds a non-string, or
                ``dimensions`` is below 1 or above the model's width.
            ContextLengthExceededError: A text over ``num_ctx`` tokens with
                ``truncate=False`` (nothing is evaluated).
        """
        texts = validate_texts(texts)
        check_dimensions(dimensions)
        check_truncate(truncate)
        if not texts:
            return []
        local = self.library.resolve(model)
        load, _sampling, model_keep_alive = split_options(local.parameters, options)
        load = replace(load, embedding=True, num_gpu=load.num_gpu)
        ttl = self._keep_alive(keep_alive, model_keep_alive)
        with self.pool.lease(local, load, keep_alive=ttl) as (entry, _load_s, _queue_s):
            if prefix is None and task is not None:
                prefix = traits_for(entry.metadata).embedding_prefixes.get(task)
            if prefix:
                texts = [t if t.startswith(prefix) else prefix + t for t in texts]
            from local_llm_runtime.llama.embedding import embed_texts

            raw = embed_texts(entry.llm, texts, truncate=truncate)
        vectors = [_pooled(v) for v in raw]
        if len(vectors) != len(texts):  # pragma: no cover - llama.cpp contract
            raise RuntimeError(f"{len(texts)} texts gave {len(vectors)} embeddings")
        return finish_vectors(vectors, dimensions=dimensions, normalize=normalize)

    async def aembed(self, model: str, texts: Sequence[str], **kwargs: Any) -> list[list[float]]:
        """Async :meth:`embed` (runs on the bounded worker pool)."""
        return await run_blocking(functools.partial(self.embed, model, texts, **kwargs))

    # ---- public: pool control -------------------------------------------------

    # ---- public: tokens ---------------------------------------------------------

    def tokenize(self, model: str, text: str, *, special: bool = False) -> list[int]:
        """The model's own token ids for ``text`` (no BOS added).

        Uses the model's vocabulary only (read once, a fraction of a second);
        the weights are not loaded.

        Args:
            model: Any model reference.
            text: The text.
            special: Parse special-token text such as ``<|im_start|>`` as tokens.
        """
        llm = self.pool.vocab(self.library.resolve(model))
        return list(llm.tokenize(text.encode("utf-8"), add_bos=False, special=special))

    def count_chat_tokens(
        self,
        model: str,
        messages: Sequence[Mapping[str, Any]],
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> int:
        """How many prompt tokens :meth:`chat` would send for these messages.

        The messages (with the model's default system prompt, and ``tools``) go
        through the model's chat template exactly as for a request, then its
        tokenizer: the count matches ``usage.prompt_tokens``.

        Raises:
            InvalidOptionError: For malformed ``messages``, as :meth:`chat_stream`.
        """
        checked = validate_messages(messages)
        local = self.library.resolve(model)
        from local_llm_runtime.llama.prompt_vocab import prompt_vocab as _prompt_vocab

        vocab = _prompt_vocab(self.pool.vocab(local))
        msgs = _with_default_system(local, checked)
        _template, protected = vocab.templates(local.template)
        prompt = protected.render(msgs, tools=normalize_tools(tools))
        return len(vocab.tokens(_Request(prompt=prompt)))

    def preload(
        self,
        model: str,
        *,
        options: Mapping[str, Any] | None = None,
        embedding: bool = False,
        keep_alive: float | str | None = None,
    ) -> RunningModel:
        """Load a model now (normally the first request does).

        ``keep_alive``: how long it then stays loaded (as a request's; negative: forever).
        """
        local = self.library.resolve(model)
        load, _sampling, keep = split_options(local.parameters, options)
        load = replace(load, embedding=embedding)
        ttl = self._keep_alive(keep_alive, keep)
        with self.pool.lease(local, load, keep_alive=ttl) as (entry, *_):
            return entry.running()

    def model_info(self, model: str) -> ModelInfo:
        """Facts from the model's GGUF header(s): no load, no download.

        Raises:
            ModelNotFoundError: The model is not on disk yet (pull it first).
            InvalidModelFileError: Its file is not a readable GGUF.
        """
        local = self.library.resolve(model, pull=False)
        details = _header_summary(tuple(local.paths))
        capabilities = tuple(details["capabilities"])
        if local.embedding and "embedding" not in capabilities:
            capabilities = ("embedding",)
        return ModelInfo(
            name=model,
            kind="embedding" if "embedding" in capabilities else "chat",
            capabilities=capabilities,
            context_length=_positive_int(details["context_length"]),
            embedding_length=_positive_int(details["embedding_length"]),
            architecture=details["architecture"],
            parameter_size=details["parameters_human"],
            quantization_level=details["quantization"],
        )

    def ps(self) -> list[RunningModel]:
        """The models loaded in this process now."""
        if self._pool is None:  # nothing was ever loaded: no need to import llama_cpp
            return []
        return self.pool.ps()

    def unload(self, model: str | None = None) -> int:
        """Unload a model (by name or path), or every model."""
        if self._pool is None:
            return 0
        if model is None:
            return self.pool.unload()
        count = self.pool.unload(model)
        if count == 0:
            try:
                count = self.pool.unload(str(self.library.resolve(model, pull=False).path))
            except LookupError:
                return 0
        return count

    # ---- the pipeline ---------------------------------------------------------

    def _keep_alive(self, explicit: float | str | None, model_default: float | None) -> float:
        if explicit is not None:
            return float(validate_options({"keep_alive": explicit})["keep_alive"])
        return self.settings.keep_alive if model_default is None else float(model_default)

    def _run(
        self,
        local: LocalModel,
        load: LoadOptions,
        sampling: SamplingOptions,
        keep_alive: float,
        cancel: threading.Event | None,
        build: Callable[[ChatTemplate], _Request],
    ) -> Iterator[Chunk]:
        """Prepare the request now (errors raise here), then stream it under the model's lease."""
        prepared = self._prepare(local, load, build)
        return self._leased(local, load, sampling, keep_alive, cancel, prepared)

    def _prepare(
        self, local: LocalModel, load: LoadOptions, build: Callable[[ChatTemplate], _Request]
    ) -> _Prepared:
        """Render, tokenize, check the context and build the grammar, without the model.

        Uses the vocabulary-only instance, so a bad schema or template, an empty
        or an over-long prompt fails at once: no load, no wait in the queue.

        Raises:
            TemplateError: The chat template refused or failed.
            InvalidOptionError: An empty prompt, or a schema/tool grammar llama.cpp
                cannot take.
            ContextLengthExceededError: The prompt does not fit the context the
                model will be loaded with.
        """
        from local_llm_runtime.llama.pool import planned_num_ctx
        from local_llm_runtime.llama.prompt_vocab import prompt_vocab as _prompt_vocab

        vocab = _prompt_vocab(self.pool.vocab(local))
        template, protected = vocab.templates(local.template)  # a Modelfile TEMPLATE wins
        request = build(protected)
        tokens = vocab.tokens(request)
        if not tokens:
            raise InvalidOptionError(
                "The prompt is empty (0 tokens): give the model some text to continue (a raw "
                "prompt gets no chat template and, for this model, no BOS token; a chat "
                "template rendered these messages to nothing)."
            )
        n_ctx = planned_num_ctx(load, vocab.n_ctx_train)
        if len(tokens) >= n_ctx:
            raise ContextLengthExceededError(len(tokens), n_ctx)
        grammar = self._grammar(template, request)
        if grammar is not None:
            _check_grammar(vocab.llm, grammar)
        return _Prepared(template=template, request=request, tokens=tokens, grammar=grammar)

    def _leased(
        self,
        local: LocalModel,
        load: LoadOptions,
        sampling: SamplingOptions,
        keep_alive: float,
        cancel: threading.Event | None,
        prepared: _Prepared,
    ) -> Iterator[Chunk]:
        with self.pool.lease(local, load, keep_alive=keep_alive) as (entry, load_s, queue_s):
            yield from self._generate(entry, prepared, sampling, load_s, queue_s, cancel)

    def _generate(
        self,
        entry: LoadedModel,
        prepared: _Prepared,
        sampling: SamplingOptions,
        load_s: float,
        queue_s: float,
        cancel: threading.Event | None,
    ) -> Iterator[Chunk]:
        """Decode ``prepared`` on the entry's decoder (a slot; one slot is a batch of one)."""
        tokens = prepared.tokens
        if len(tokens) >= entry.num_ctx:
            raise ContextLengthExceededError(len(tokens), entry.num_ctx)
        budget = entry.num_ctx - len(tokens)
        max_tokens = min(sampling.num_predict, budget) if sampling.num_predict > 0 else budget
        # Each token's logprob goes with the text it shows; hidden reasoning is dropped
        # after that (not before), so its tokens' logprobs leave with it.
        request = prepared.request
        carrier = LogprobCarrier(hide_reasoning=request.reasoning == "hide")
        if carrier.hide_reasoning:
            request = replace(request, reasoning="separate")
        out = _OutputPipeline(prepared.template, request, sampling.stop)
        started = time.monotonic()
        run = self._start(entry, prepared, sampling, max_tokens, cancel)
        loop = _TokenLoop(entry.llm, out, max_tokens, cancel)
        sampled: Iterable[int] = run
        if sampling.logprobs:
            from local_llm_runtime.llama.logprob_tokens import tokens_with_logprobs

            sampled = tokens_with_logprobs(entry.llm, run, carrier)
        try:
            yield from carrier.chunks(loop.run(sampled))
        finally:
            run.close()
        # Only an output that ended by itself (end-of-generation token, stop sequence,
        # the one allowed call complete) may have a last call completed; a cut one
        # (token limit, cancel, timeout) is text. Errors raise before this line.
        yield from carrier.chunks(out.finish(ended_naturally=loop.finish == "stop"))
        ended = time.monotonic()
        first = loop.first_token_at or ended
        yield FinalChunk(
            finish_reason="tool_calls" if out.tool_calls and loop.finish == "stop" else loop.finish,
            usage=Usage(prompt_tokens=len(tokens), completion_tokens=loop.produced),
            timings=Timings(
                load_s=load_s,
                queue_s=queue_s,
                prompt_s=first - started,
                generation_s=ended - first,
                prompt_tokens=max(1, len(tokens) - run.reused),
                sampled_tokens=loop.sampled,
            ),
            model=entry.model.name,
        )

    @staticmethod
    def _start(
        entry: LoadedModel,
        prepared: _Prepared,
        sampling: SamplingOptions,
        max_tokens: int,
        cancel: threading.Event | None,
    ) -> SlotRun:
        """Give the request a slot of the entry's decoder, with its own sampler."""
        if entry.batcher is None:  # pragma: no cover - the pool gives every chat entry one
            raise GenerationError("this model instance was loaded for embeddings only")
        n_ctx = entry.num_ctx
        if not 0 <= sampling.repeat_last_n <= n_ctx:  # -1 (Ollama: the whole context) or more
            sampling = replace(sampling, repeat_last_n=n_ctx)  # llama.cpp allocates this window
        from local_llm_runtime.llama.sampling import Sampler

        sampler = Sampler(
            entry.llm,
            sampling,
            sampling.seed if sampling.seed is not None else random.getrandbits(31),
            prepared.grammar,
        )
        # A seed promises the same output for the same request whatever ran before.
        # Reusing a cached prompt prefix changes how the rest is batched, and
        # llama.cpp's kernels are not bit-identical across batch shapes, so seeded
        # requests evaluate their whole prompt (unseeded ones reuse the prefix).
        try:  # from here on the decoder owns the sampler
            return entry.batcher.start(
                prepared.tokens,
                sampler,
                max_tokens=max_tokens + 1,
                reuse=sampling.seed is None,
                cancel=cancel,
            )
        except BaseException:
            sampler.close()
            raise

    @staticmethod
    def _grammar(template: ChatTemplate, request: _Request) -> str | None:
        """The GBNF grammar that enforces forced tool calls or a JSON answer, if any."""
        if request.tools and request.tool_choice not in ("auto", "none"):
            name = None if request.tool_choice == "required" else request.tool_choice
            return tool_call_gbnf(
                template.tool_format,
                request.tools,
                name=name,
                parallel=name is None and request.parallel_tool_calls,
            )
        if request.schema is not None:
            return json_schema_gbnf(None if request.schema == "json" else request.schema)
        return None


class _TokenLoop:
    """Sampled tokens -> output chunks, until a stop, the token budget or a cancel.

    After :meth:`run`, ``finish`` says why it ended and the counters say what it did.
    """

    def __init__(
        self,
        llm: llama_cpp.Llama,
        out: _OutputPipeline,
        max_tokens: int,
        cancel: threading.Event | None,
    ) -> None:
        self._llm = llm
        self._out = out
        self._max_tokens = max_tokens
        self._cancel = cancel
        self.finish: FinishReason = "length"
        self.first_token_at: float | None = None
        self.produced = 0
        """Tokens that became output (an end-of-generation token does not)."""
        self.sampled = 0

    def run(self, tokens: Iterable[int]) -> Iterator[Chunk]:
        """Feed ``tokens`` through the output pipeline, yielding its chunks."""
        cancel, out = self._cancel, self._out
        if cancel is not None and cancel.is_set():
            self.finish = "cancelled"
            return
        for token in tokens:
            self.sampled += 1
            if self.first_token_at is None:
                self.first_token_at = time.monotonic()
            if _is_eog(self._llm, token):
                self.finish = "stop"
                return
            self.produced += 1
            yield from out.feed(self._llm.detokenize([token]))
            if out.stopped:
                self.finish = "stop"
                return
            if cancel is not None and cancel.is_set():
                self.finish = "cancelled"
                return
            if self.produced >= self._max_tokens:
                self.finish = "length"
                return
        self.finish = "cancelled"  # the token loop only ends when cancelled during the prompt


def _with_default_system(
    local: LocalModel, messages: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Copy the messages, adding the model's default system prompt if they have none.

    The model's fixed history (a Modelfile's ``MESSAGE`` lines) goes after the leading
    system message(s) and before the caller's conversation (chat only, as Ollama).
    """
    msgs = [dict(m) for m in messages]
    if local.system and not any(m.get("role") == "system" for m in msgs):
        msgs.insert(0, {"role": "system", "content": local.system})
    if local.messages:
        at = 0
        while at < len(msgs) and msgs[at].get("role") == "system":
            at += 1
        msgs[at:at] = [dict(m) for m in local.messages]
    return msgs


def _pooled(vector: Any) -> list[float]:
    if vector and isinstance(vector[0], list):  # token-level output: mean-pool it
        n = len(vector)
        return [sum(col) / n for col in zip(*vector, strict=True)]
    return [float(x) for x in vector]


def _header_summary(paths: tuple[Path, ...]) -> dict[str, Any]:
    """:func:`summarize` of the files' headers, read once per file version."""
    stamps = tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in paths)
    return _cached_summary(stamps)


@functools.lru_cache(maxsize=64)
def _cached_summary(stamps: tuple[tuple[str, int, int], ...]) -> dict[str, Any]:
    return summarize([read_gguf_info(Path(path)) for path, _mtime, _size in stamps])


def _positive_int(value: Any) -> int | None:
    return value if isinstance(value, int) and value > 0 else None


Engine = LlamaEngine
"""The in-process engine under its 0.1 name (:class:`LlamaEngine`)."""

if TYPE_CHECKING:  # mypy checks LlamaEngine against the interface on every run
    from local_llm_runtime.interface import EngineProtocol

    _conforms: EngineProtocol = LlamaEngine()


def default_engine() -> LlamaEngine:
    """The process-wide in-process engine (:func:`local_llm_runtime.default_engine`).

    Raises:
        TypeError: When the process-wide engine is another backend.
    """
    from local_llm_runtime.backends import default_engine as shared

    engine = shared()
    if not isinstance(engine, LlamaEngine):
        raise TypeError(f"The process-wide engine is {type(engine).__name__}, not LlamaEngine.")
    return engine
