"""``LocalLLM``: a LlamaIndex function-calling LLM served in-process by the shared runtime.

Pipeline: fields + per-call kwargs -> :func:`build_request` -> ``engine.chat_stream``
(or ``achat_stream``: a worker thread, the event loop stays free) -> runtime chunks
-> :class:`ChatAccumulator` -> ``ChatResponse``s. Non-streaming calls fold the same
stream, so usage, thinking and tool calls are identical on every path. The
model's own chat template renders the prompt; nothing here formats text.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal, cast

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
)
from llama_index.core.bridge.pydantic import Field, PrivateAttr, model_validator
from llama_index.core.constants import DEFAULT_NUM_OUTPUTS
from llama_index.core.instrumentation.events.llm import (
    LLMStructuredPredictEndEvent,
    LLMStructuredPredictStartEvent,
)
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import ToolSelection
from llama_index.core.prompts.base import BasePromptTemplate, PromptTemplate
from llama_index.core.types import Model, PydanticProgramMode
from llama_index_instrumentation import get_dispatcher

from local_llm_integrations._options import (
    ENGINE_FIELD_DOC,
    EngineSetting,
    LlamaIndexOptionFields,
    RemoteFields,
    check_constructor_arguments,
)
from local_llm_integrations.llama_index._convert import (
    ChatAccumulator,
    completion_response,
    keep_first_tool_call,
    to_runtime_messages,
    tool_selections,
)
from local_llm_integrations.llama_index._options import (
    ReasoningSetting,
    Request,
    build_request,
    to_runtime_tools,
)
from local_llm_integrations.llama_index._structured import (
    aparse_stream,
    parse_output,
    parse_stream,
    schema_of,
)
from local_llm_runtime.errors import InvalidOptionError, ModelNotFoundError
from local_llm_runtime.interface import EngineProtocol
from local_llm_runtime.numbers import NotBoolFloat
from local_llm_runtime.types import Chunk, ModelInfo

if TYPE_CHECKING:
    from llama_index.core.program.utils import FlexibleModel
    from llama_index.core.tools.types import BaseTool

__all__ = ["LocalLLM"]

dispatcher = get_dispatcher(__name__)

_FIELD_ALIASES = {"max_tokens": "num_predict", "thinking": "reasoning", "context_window": "num_ctx"}


class LocalLLM(LlamaIndexOptionFields, RemoteFields, FunctionCallingLLM):
    """A local GGUF model for LlamaIndex, in-process, with Ollama's names and options.

    Every instance naming the same model (and every LangChain adapter in the
    process) shares one loaded llama.cpp instance; construction does no I/O
    (``preload=True`` opts in). Prompts are rendered with the model's own chat
    template; tool calls, JSON-schema output and ``<think>`` reasoning are
    handled by the runtime. The Ollama-named option fields (``temperature`` ...
    ``keep_alive``) come from :class:`~local_llm_runtime.options.ModelOptions`;
    aliases: ``max_tokens`` (``num_predict``), ``context_window`` (``num_ctx``),
    ``thinking`` (``reasoning``).

    Example:
        .. code-block:: python

            from local_llm_integrations.llama_index import LocalLLM

            llm = LocalLLM(model="qwen2.5:7b", temperature=0)
            print(llm.complete("Why is the sky blue?"))
            for r in llm.stream_chat([ChatMessage(role="user", content="Hi")]):
                print(r.delta, end="")
    """

    model: str = Field(
        description=(
            "Model reference: an Ollama-style name (`qwen2.5:7b`), `hf.co/org/repo:QUANT`, "
            "a path to a `.gguf` file, or a name made with `local-llm create`."
        )
    )
    reasoning: ReasoningSetting = Field(
        default=None,
        description=(
            "Reasoning models' `<think>` text: True/None puts it in thinking blocks "
            "(`thinking_delta` when streaming), False drops it, 'inline' keeps it in the "
            "answer. Alias: `thinking`; per call: `reasoning=`, `thinking=` or `think=`."
        ),
    )
    format: dict[str, Any] | Literal["json"] | None = Field(
        default=None,
        description="Constrain every answer to this JSON schema (or any JSON with 'json').",
    )
    is_function_calling_model: bool | None = Field(
        default=None,
        description=(
            "Whether to advertise function calling; None detects it from the model's chat "
            "template (does it render tools?)."
        ),
    )
    preload: bool = Field(
        default=False,
        description="Load the model when the object is created (otherwise on the first call).",
    )
    request_timeout: NotBoolFloat | None = Field(
        default=None,
        gt=0,
        description=(
            "Seconds for each request (as Ollama's `request_timeout`), counted from the call: "
            "resolving/pulling the model, preparing the prompt, loading, waiting for the "
            "model, prompt evaluation and generation. Past it the call raises "
            "RequestTimeoutError (a TimeoutError) naming the time of each phase; a stream "
            "raises after the responses it yielded. None (default): no limit."
        ),
    )

    engine: EngineSetting = Field(
        default=None, exclude=True, repr=False, description=ENGINE_FIELD_DOC
    )

    _info: tuple[str, EngineProtocol, ModelInfo] | None = PrivateAttr(default=None)

    def __init__(self, **data: Any) -> None:
        """Create the LLM; unknown or misspelt keywords and bad option values raise.

        Raises:
            UnknownOptionError: For a keyword the class does not know (with the
                closest known name), instead of ignoring it.
            ValidationError: For an option value out of its field's bounds (NaN, ...).
            InvalidOptionError: For a value the runtime refuses (an empty stop
                sequence, a malformed ``keep_alive``).
        """
        check_constructor_arguments(type(self), data, [*_FIELD_ALIASES, "class_name"])
        super().__init__(**data)
        self.check_option_values()

    @model_validator(mode="before")
    @classmethod
    def _aliases(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            for alias, name in _FIELD_ALIASES.items():
                if alias in data:
                    value = data.pop(alias)
                    if data.get(name) is not None and value is not None and data[name] != value:
                        raise InvalidOptionError(
                            f"{alias}={value!r} and {name}={data[name]!r} are the same "
                            f"setting; pass only one of them."
                        )
                    if data.get(name) is None:
                        data[name] = value
        return data

    @model_validator(mode="after")
    def _maybe_preload(self) -> LocalLLM:
        if self.preload:
            self._serving_engine().preload(self.model, options=self.option_values(("load",)))
        return self

    @classmethod
    def class_name(cls) -> str:
        """Name used when serializing."""
        return "LocalLLM"

    def _serving_engine(self) -> EngineProtocol:
        return self.serving_engine()

    @property
    def metadata(self) -> LLMMetadata:
        """Context window, output budget and capabilities, from ``engine.model_info``.

        Asked lazily on first access (the in-process engine reads the GGUF
        header only, never the weights). The context window is ``num_ctx`` (or
        the engine's default) capped by the model's trained context. A model
        the engine does not have yet (``ModelNotFoundError``: not pulled) reports
        the configured ``num_ctx`` (or 4096) and function calling, without a download.
        """
        info = self._model_info()
        if info is None:
            context_window = self.num_ctx or 4096
            tools = True
        else:
            context_window = info.context_window(self.num_ctx)
            if info.context_length:
                context_window = min(context_window, info.context_length)
            tools = info.supports_tools
        if self.is_function_calling_model is not None:
            tools = self.is_function_calling_model
        num_output = self.num_predict if self.num_predict and self.num_predict > 0 else None
        return LLMMetadata(
            context_window=context_window,
            num_output=min(num_output or DEFAULT_NUM_OUTPUTS, context_window),
            is_chat_model=True,
            is_function_calling_model=tools,
            model_name=self.model,
        )

    def tokenize(self, text: str) -> list[int]:
        """Token ids of ``text`` from the model's own tokenizer (vocabulary only, no weights).

        LlamaIndex counts tokens with tiktoken unless told otherwise; for
        budgets that match this model use ``Settings.tokenizer = llm.tokenize``.
        """
        return self._serving_engine().tokenize(self.model, text)

    def _model_info(self) -> ModelInfo | None:
        """The engine's facts about the model (cached once found), ``None`` if it has none."""
        engine = self._serving_engine()
        cached = self._info
        if cached is not None and cached[0] == self.model and cached[1] is engine:
            return cached[2]
        try:
            info = engine.model_info(self.model)
        except ModelNotFoundError:
            return None  # not pulled yet: asked again next time, never downloaded here
        self._info = (self.model, engine, info)
        return info

    # ---- request building ----------------------------------------------------

    def _request(self, kwargs: dict[str, Any]) -> Request:
        defaults: dict[str, Any] = self.option_values()
        defaults.update(
            model=self.model,
            reasoning=self.reasoning,
            format=self.format,
            keep_alive=self.keep_alive,
        )
        return build_request(defaults, kwargs, option_names=self.option_names())

    def _chat_chunks(
        self, messages: Sequence[ChatMessage], kwargs: dict[str, Any]
    ) -> Iterator[Chunk]:
        request = self._request(kwargs)
        return self._serving_engine().chat_stream(
            request.model,
            to_runtime_messages(messages),
            timeout=self.request_timeout,
            **request.chat_kwargs(),
        )

    def _achat_chunks(
        self, messages: Sequence[ChatMessage], kwargs: dict[str, Any]
    ) -> AsyncIterator[Chunk]:
        request = self._request(kwargs)
        return self._serving_engine().achat_stream(
            request.model,
            to_runtime_messages(messages),
            timeout=self.request_timeout,
            **request.chat_kwargs(),
        )

    def _completion_messages(self, prompt: str) -> list[ChatMessage]:
        messages = [ChatMessage(role=MessageRole.USER, content=prompt)]
        if self.system_prompt:
            messages.insert(0, ChatMessage(role=MessageRole.SYSTEM, content=self.system_prompt))
        return messages

    def _completion_chunks(
        self, prompt: str, formatted: bool, kwargs: dict[str, Any]
    ) -> Iterator[Chunk]:
        if not formatted:
            return self._chat_chunks(self._completion_messages(prompt), kwargs)
        request = self._request(kwargs)  # already formatted: continue the text as is
        return self._serving_engine().generate_stream(
            request.model, prompt, timeout=self.request_timeout, **request.generate_kwargs()
        )

    def _acompletion_chunks(
        self, prompt: str, formatted: bool, kwargs: dict[str, Any]
    ) -> AsyncIterator[Chunk]:
        if not formatted:
            return self._achat_chunks(self._completion_messages(prompt), kwargs)
        request = self._request(kwargs)
        return self._serving_engine().agenerate_stream(
            request.model, prompt, timeout=self.request_timeout, **request.generate_kwargs()
        )

    # ---- chat ----------------------------------------------------------------

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """Chat (per-call kwargs override the fields: options, tools, format, thinking)."""
        return _fold(self._chat_chunks(messages, kwargs))

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        """Stream a chat: one response per token (``delta``), thinking in ``thinking_delta``."""
        chunks = self._chat_chunks(messages, kwargs)
        return _stream_responses(chunks)

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """Async :meth:`chat`: generation runs in a worker thread."""
        return await _afold(self._achat_chunks(messages, kwargs))

    @llm_chat_callback()
    async def astream_chat(
        self, messages: Sequence[ChatMessage], **kwargs: Any
    ) -> ChatResponseAsyncGen:
        """Async :meth:`stream_chat`; cancelling the consumer stops generation."""
        return _astream_responses(self._achat_chunks(messages, kwargs))

    # ---- completion ------------------------------------------------------------

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        """Complete a prompt (as a user turn in the chat template; ``formatted=True``: raw)."""
        return completion_response(_fold(self._completion_chunks(prompt, formatted, kwargs)))

    @llm_completion_callback()
    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        """Stream :meth:`complete`, one response per token."""
        chunks = self._completion_chunks(prompt, formatted, kwargs)

        def gen() -> CompletionResponseGen:
            responses = _stream_responses(chunks)
            try:
                for response in responses:
                    yield completion_response(response)
            finally:
                responses.close()  # closes the engine stream: it holds the model

        return gen()

    @llm_completion_callback()
    async def acomplete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponse:
        """Async :meth:`complete`."""
        chunks = self._acompletion_chunks(prompt, formatted, kwargs)
        return completion_response(await _afold(chunks))

    @llm_completion_callback()
    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        """Async :meth:`stream_complete`."""
        responses = _astream_responses(self._acompletion_chunks(prompt, formatted, kwargs))

        async def gen() -> CompletionResponseAsyncGen:
            try:
                async for response in responses:
                    yield completion_response(response)
            finally:
                await responses.aclose()  # closes the engine stream: it holds the model

        return gen()

    # ---- tools -----------------------------------------------------------------

    def _prepare_chat_with_tools(
        self,
        tools: Sequence[BaseTool],
        user_msg: str | ChatMessage | None = None,
        chat_history: list[ChatMessage] | None = None,
        verbose: bool = False,
        allow_parallel_tool_calls: bool = False,
        tool_required: bool = False,
        tool_choice: Any = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Messages and tool arguments for :meth:`chat` (the history is not modified).

        ``tool_required=True`` (or ``tool_choice="required"``/a tool name) makes
        the runtime enforce a call with a grammar, so arguments always validate.
        """
        messages = list(chat_history or [])
        if isinstance(user_msg, str):
            user_msg = ChatMessage(role=MessageRole.USER, content=user_msg)
        if user_msg is not None:
            messages.append(user_msg)
        return {
            "messages": messages,
            "tools": to_runtime_tools(tools),
            "tool_choice": tool_choice,
            "tool_required": tool_required,
            "parallel_tool_calls": allow_parallel_tool_calls,
            **kwargs,
        }

    def _validate_chat_with_tools_response(
        self,
        response: ChatResponse,
        tools: Sequence[BaseTool],
        allow_parallel_tool_calls: bool = False,
        **kwargs: Any,
    ) -> ChatResponse:
        """Keep only the first tool call unless parallel calls are allowed."""
        return response if allow_parallel_tool_calls else keep_first_tool_call(response)

    def get_tool_calls_from_response(
        self,
        response: ChatResponse,
        error_on_no_tool_call: bool = True,
        **kwargs: Any,
    ) -> list[ToolSelection]:
        """The tool calls of a (possibly streamed) response.

        Raises:
            ValueError: If there is none and ``error_on_no_tool_call`` is set.
        """
        return tool_selections(response.message, error_on_no_tool_call=error_on_no_tool_call)

    # ---- structured output (grammar-backed) ------------------------------------

    def _structured(
        self,
        output_cls: type[Model],
        prompt: BasePromptTemplate,
        llm_kwargs: dict[str, Any] | None,
        prompt_args: dict[str, Any],
    ) -> tuple[list[ChatMessage], dict[str, Any]]:
        messages = self._get_messages(prompt, **prompt_args)
        return messages, {**(llm_kwargs or {}), "format": schema_of(output_cls)}

    @dispatcher.span
    def structured_predict(
        self,
        output_cls: type[Model],
        prompt: BasePromptTemplate,
        llm_kwargs: dict[str, Any] | None = None,
        **prompt_args: Any,
    ) -> Model:
        """Predict an instance of ``output_cls``; the runtime's grammar makes it valid JSON.

        The pydantic model's JSON schema is passed as ``format``, so the answer
        always parses (unless generation is cut by ``num_predict``). Other
        ``pydantic_program_mode`` values use LlamaIndex's programs.
        """
        if self.pydantic_program_mode != PydanticProgramMode.DEFAULT:
            return cast(
                Model, super().structured_predict(output_cls, prompt, llm_kwargs, **prompt_args)
            )
        dispatcher.event(
            LLMStructuredPredictStartEvent(
                output_cls=output_cls, template=prompt, template_args=prompt_args
            )
        )
        messages, kwargs = self._structured(output_cls, prompt, llm_kwargs, prompt_args)
        result = parse_output(output_cls, self.chat(messages, **kwargs))
        dispatcher.event(LLMStructuredPredictEndEvent(output=result))
        return result

    @dispatcher.span
    async def astructured_predict(
        self,
        output_cls: type[Model],
        prompt: BasePromptTemplate,
        llm_kwargs: dict[str, Any] | None = None,
        **prompt_args: Any,
    ) -> Model:
        """Async :meth:`structured_predict`."""
        if self.pydantic_program_mode != PydanticProgramMode.DEFAULT:
            result: Model = await super().astructured_predict(
                output_cls, prompt, llm_kwargs, **prompt_args
            )
            return result
        dispatcher.event(
            LLMStructuredPredictStartEvent(
                output_cls=output_cls, template=prompt, template_args=prompt_args
            )
        )
        messages, kwargs = self._structured(output_cls, prompt, llm_kwargs, prompt_args)
        result = parse_output(output_cls, await self.achat(messages, **kwargs))
        dispatcher.event(LLMStructuredPredictEndEvent(output=result))
        return result

    def _structured_stream_call(
        self,
        output_cls: type[Model],
        prompt: BasePromptTemplate,
        llm_kwargs: dict[str, Any] | None = None,
        **prompt_args: Any,
    ) -> Generator[Model | list[Model] | FlexibleModel | list[FlexibleModel], None, None]:
        if self.pydantic_program_mode != PydanticProgramMode.DEFAULT:
            template = cast(PromptTemplate, prompt)  # the base accepts any template
            return super()._structured_stream_call(output_cls, template, llm_kwargs, **prompt_args)
        messages, kwargs = self._structured(output_cls, prompt, llm_kwargs, prompt_args)
        return parse_stream(output_cls, self.stream_chat(messages, **kwargs))

    async def _structured_astream_call(
        self,
        output_cls: type[Model],
        prompt: BasePromptTemplate,
        llm_kwargs: dict[str, Any] | None = None,
        **prompt_args: Any,
    ) -> AsyncGenerator[Model | list[Model] | FlexibleModel | list[FlexibleModel], None]:
        if self.pydantic_program_mode != PydanticProgramMode.DEFAULT:
            template = cast(PromptTemplate, prompt)
            return await super()._structured_astream_call(
                output_cls, template, llm_kwargs, **prompt_args
            )
        messages, kwargs = self._structured(output_cls, prompt, llm_kwargs, prompt_args)
        return aparse_stream(output_cls, await self.astream_chat(messages, **kwargs))


def _fold(chunks: Iterator[Chunk]) -> ChatResponse:
    """The whole response of a chunk stream (closed even when interrupted)."""
    accumulator = ChatAccumulator()
    try:
        for chunk in chunks:
            accumulator.add(chunk)
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    return accumulator.response()


async def _afold(chunks: AsyncIterator[Chunk]) -> ChatResponse:
    """Async :func:`_fold`: cancelling the caller stops generation within a token."""
    accumulator = ChatAccumulator()
    try:
        async for chunk in chunks:
            accumulator.add(chunk)
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()
    return accumulator.response()


def _stream_responses(chunks: Iterator[Chunk]) -> ChatResponseGen:
    """Stream responses for engine chunks; closing it stops generation."""
    accumulator = ChatAccumulator()
    try:
        for chunk in chunks:
            yield accumulator.feed(chunk)
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()


async def _astream_responses(chunks: AsyncIterator[Chunk]) -> ChatResponseAsyncGen:
    """Async :func:`_stream_responses`; cancelling it stops generation."""
    accumulator = ChatAccumulator()
    try:
        async for chunk in chunks:
            yield accumulator.feed(chunk)
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()
