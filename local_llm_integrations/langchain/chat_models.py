"""``ChatLocal``: a LangChain chat model served in-process by the shared runtime.

Pipeline (as langchain-ollama's): fields + per-call kwargs -> engine options ->
``engine.chat_stream`` -> pure chunk conversion -> ``_stream``; ``_generate``
aggregates the same stream, so usage and callbacks match on every path.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from operator import itemgetter
from typing import Any, Literal

from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import LangSmithParams, LanguageModelInput
from langchain_core.language_models.chat_models import (
    BaseChatModel,
    generate_from_stream,
)
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.output_parsers import (
    JsonOutputKeyToolsParser,
    JsonOutputParser,
    PydanticOutputParser,
)
from langchain_core.output_parsers.openai_tools import PydanticToolsParser
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableMap, RunnablePassthrough
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_json_schema, convert_to_openai_tool
from langchain_core.utils.pydantic import is_basemodel_subclass
from pydantic import BaseModel, ConfigDict, Field

from local_llm_integrations._options import CALL_OPTIONS as _CALL_OPTIONS
from local_llm_integrations._options import LocalModelOptions, reasoning_mode
from local_llm_integrations.langchain._convert import (
    message_chunk,
    restore_invalid_tool_calls,
    to_runtime_messages,
)
from local_llm_runtime.logprobs import token_logprob_object
from local_llm_runtime.numbers import NotBoolFloat, NotBoolInt
from local_llm_runtime.types import Chunk, TextDelta, TokenLogprob
from local_llm_runtime.validation import check_arguments

__all__ = ["ChatLocal"]

_CALL_ARGUMENTS = _CALL_OPTIONS | {
    "model", "reasoning", "format", "tools", "tool_choice", "parallel_tool_calls", "keep_alive",
    "ls_structured_output_format",
}  # fmt: skip
"""Keyword arguments a call (``invoke(..., **kwargs)``, ``bind(...)``) may carry."""


class ChatLocal(LocalModelOptions, BaseChatModel):
    """Chat with a local GGUF model, in-process, Ollama-style names and options.

    Every instance naming the same model (and every other adapter in the
    process) shares one loaded llama.cpp instance; construction does no I/O.

    Example:
        .. code-block:: python

            from local_llm_integrations import ChatLocal

            llm = ChatLocal(model="qwen2.5:7b", temperature=0)
            llm.invoke("Why is the sky blue?")
            llm.bind_tools([get_weather]).invoke("Weather in Paris?")
            llm.with_structured_output(Person).invoke("Ada, 36, London")
    """

    model_config = ConfigDict(populate_by_name=True, protected_namespaces=())

    format: dict[str, Any] | Literal["json"] | None = None
    """Constrain every answer to this JSON schema (or any JSON with ``"json"``)."""

    timeout: NotBoolFloat | None = Field(default=None, gt=0)
    """Seconds for each request, counted from the call: resolving (or pulling) the model,
    preparing the prompt, loading, waiting for the model, prompt evaluation and
    generation. Past it the call raises
    :class:`~local_llm_runtime.errors.RequestTimeoutError` (a ``TimeoutError``) naming
    the time of each phase, as ``ChatOpenAI``/``ChatOllama`` raise; a stream raises
    after the chunks it has yielded. ``None`` (default): no limit."""

    max_retries: NotBoolInt = Field(default=0, ge=0)
    """Accepted for LangChain compatibility; local calls do not fail transiently."""

    streaming: bool = False
    """``invoke``/``generate`` stream internally (callbacks get every token), as
    ``ChatOpenAI(streaming=True)``; the result is the same."""

    @property
    def _llm_type(self) -> str:
        return "local-llm-chat"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": self.model, **self._server(), **self.engine_options()}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(
            ls_provider="local-llm",
            ls_model_name=str(kwargs.get("model") or self.model),
            ls_model_type="chat",
        )
        temperature = kwargs.get("temperature", self.temperature)
        if temperature is not None:
            params["ls_temperature"] = temperature
        max_tokens = kwargs.get("max_tokens", kwargs.get("num_predict", self.num_predict))
        if max_tokens is not None:
            params["ls_max_tokens"] = max_tokens
        stops = stop or kwargs.get("stop") or self.stop
        if stops:
            params["ls_stop"] = list(stops)
        return params

    # ---- token counting --------------------------------------------------------

    def get_token_ids(self, text: str) -> list[int]:
        """Token ids of ``text`` from the model's own tokenizer (not GPT-2's).

        Reads the model's vocabulary only; the weights are not loaded.
        """
        return self.serving_engine().tokenize(self.model, text)

    def get_num_tokens_from_messages(
        self, messages: list[BaseMessage], tools: Sequence[Any] | None = None
    ) -> int:
        """Exact prompt tokens for these messages: the model's chat template, then its tokenizer.

        Works as ``trim_messages(..., token_counter=llm)``; with ``tools`` their
        rendering in the template is counted too.
        """
        formatted = [convert_to_openai_tool(tool) for tool in tools] if tools else None
        return self.serving_engine().count_chat_tokens(
            self.model, to_runtime_messages(messages), tools=formatted
        )

    # ---- request building --------------------------------------------------

    def _request(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
        kwargs = dict(kwargs)
        kwargs.pop("ls_structured_output_format", None)
        model = kwargs.pop("model", None) or self.model
        overrides = {k: kwargs.pop(k) for k in list(kwargs) if k in _CALL_OPTIONS}
        if stop is not None:
            overrides["stop"] = stop
        call: dict[str, Any] = {
            "options": self.engine_options(overrides),
            "reasoning": reasoning_mode(kwargs.pop("reasoning", self.reasoning)),
            "format": kwargs.pop("format", self.format),
            "tools": kwargs.pop("tools", None),
            "tool_choice": kwargs.pop("tool_choice", None) or "auto",
        }
        parallel = kwargs.pop("parallel_tool_calls", None)
        if parallel is not None:
            call["parallel_tool_calls"] = bool(parallel)
        keep_alive = kwargs.pop("keep_alive", self.keep_alive)
        if keep_alive is not None:
            call["keep_alive"] = keep_alive
        check_arguments("ChatLocal call", kwargs, _CALL_ARGUMENTS)  # raises on any left
        return model, to_runtime_messages(messages), call

    # ---- generation ----------------------------------------------------------

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        model, runtime_messages, call = self._request(messages, stop, kwargs)
        logprobs = bool(call["options"].get("logprobs"))
        # Closed on every path (an exception in the caller's loop, an abandoned
        # generator): the stream holds the model until it is closed.
        with self.serving_engine().chat_stream(
            model, runtime_messages, timeout=self.timeout, **call
        ) as stream:
            for chunk in stream:
                generation = _generation_chunk(chunk, logprobs=logprobs)
                if run_manager is not None:
                    run_manager.on_llm_new_token(
                        generation.text, chunk=generation, logprobs=_logprobs_of(generation)
                    )
                yield generation

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        model, runtime_messages, call = self._request(messages, stop, kwargs)
        logprobs = bool(call["options"].get("logprobs"))
        async with self.serving_engine().achat_stream(
            model, runtime_messages, timeout=self.timeout, **call
        ) as stream:
            async for chunk in stream:
                generation = _generation_chunk(chunk, logprobs=logprobs)
                if run_manager is not None:
                    await run_manager.on_llm_new_token(
                        generation.text, chunk=generation, logprobs=_logprobs_of(generation)
                    )
                yield generation

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        chunks = list(self._stream(messages, stop, run_manager, **kwargs))
        return _restored(generate_from_stream(iter(chunks)), chunks)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        chunks = [c async for c in self._astream(messages, stop, run_manager, **kwargs)]
        return _restored(generate_from_stream(iter(chunks)), chunks)

    # ---- tools and structured output -------------------------------------------

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: dict[str, Any] | str | bool | None = None,
        parallel_tool_calls: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Offer tools to the model.

        Args:
            tools: Pydantic models, functions, ``BaseTool`` or OpenAI tool dicts.
            tool_choice: ``"auto"`` (default), ``"none"``, ``"any"``/``"required"``
                (some tool, enforced by a grammar), a tool name or
                ``{"type": "function", "function": {"name": ...}}`` (that tool),
                ``True`` (the only tool).
            parallel_tool_calls: ``False`` allows at most one call per turn (as in
                ``ChatOpenAI``): forced calls are limited by the grammar and
                generation stops after the first call. Default: several allowed.
            **kwargs: Bound as call arguments.
        """
        formatted = [convert_to_openai_tool(tool) for tool in tools]
        choice = _tool_choice(tool_choice, formatted)
        if parallel_tool_calls is not None:
            kwargs = {**kwargs, "parallel_tool_calls": parallel_tool_calls}
        return super().bind(tools=formatted, tool_choice=choice, **kwargs)

    def with_structured_output(
        self,
        schema: dict[str, Any] | type,
        *,
        method: Literal["json_schema", "function_calling", "json_mode"] = "json_schema",
        include_raw: bool = False,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, dict[str, Any] | BaseModel]:
        """Return output that always validates against ``schema``.

        ``json_schema`` (default) turns the schema into a grammar, so the answer
        is always valid; ``function_calling`` forces a call of a tool with that
        schema (also grammar-backed); ``json_mode`` asks for any JSON object.
        ``strict`` is accepted for compatibility: output is always strict here.
        """
        del strict  # the grammar always enforces the schema
        if kwargs:
            raise ValueError(f"Unexpected arguments: {', '.join(sorted(kwargs))}")
        is_pydantic = isinstance(schema, type) and is_basemodel_subclass(schema)
        trace = {"kwargs": {"method": method}, "schema": convert_to_json_schema(schema)}
        parser: Runnable[Any, Any]
        if method == "function_calling":
            tool = convert_to_openai_tool(schema)
            name = tool["function"]["name"]
            llm = self.bind_tools([schema], tool_choice=name, ls_structured_output_format=trace)
            parser = (
                PydanticToolsParser(tools=[schema], first_tool_only=True)  # type: ignore[list-item]
                if is_pydantic
                else JsonOutputKeyToolsParser(key_name=name, first_tool_only=True)
            )
        elif method in ("json_schema", "json_mode"):
            fmt = "json" if method == "json_mode" else trace["schema"]
            llm = self.bind(format=fmt, ls_structured_output_format=trace)
            parser = (
                PydanticOutputParser(pydantic_object=schema)  # type: ignore[arg-type]
                if is_pydantic
                else JsonOutputParser()
            )
        else:
            raise ValueError(
                f"Unknown method {method!r}: use 'json_schema', 'function_calling' or 'json_mode'."
            )
        if not include_raw:
            return llm | parser
        parse = RunnablePassthrough.assign(
            parsed=itemgetter("raw") | parser, parsing_error=lambda _: None
        )
        fallback = RunnablePassthrough.assign(parsed=lambda _: None)
        return RunnableMap(raw=llm) | parse.with_fallbacks(
            [fallback], exception_key="parsing_error"
        )


def _restored(result: ChatResult, chunks: list[ChatGenerationChunk]) -> ChatResult:
    """``result`` with its invalid tool calls' plain arguments and errors restored."""
    message = result.generations[0].message
    if isinstance(message, AIMessage) and message.invalid_tool_calls:
        parts = [c.message for c in chunks if isinstance(c.message, AIMessageChunk)]
        restore_invalid_tool_calls(message, parts)
    return result


def _generation_chunk(chunk: Chunk, *, logprobs: bool = False) -> ChatGenerationChunk:
    """One LangChain chunk; with ``logprobs``, ``generation_info["logprobs"]`` as ChatOpenAI's.

    ``{"content": [{"token", "logprob", "bytes", "top_logprobs"}], "refusal": None}``
    on every answer chunk (and an empty ``content`` on the last one, so the whole
    answer has the key even without tokens); LangChain merges them into the
    message's ``response_metadata["logprobs"]`` (the ``content`` lists concatenate).
    """
    message = message_chunk(chunk)
    info: dict[str, Any] | None = None
    if logprobs and isinstance(chunk, TextDelta):
        info = {"logprobs": _content_logprobs(chunk.logprobs)}
    if message.chunk_position == "last":
        info = {
            "finish_reason": message.response_metadata.get("finish_reason"),
            "model_name": message.response_metadata.get("model_name"),
        }
        if logprobs:
            info["logprobs"] = _content_logprobs(())
    return ChatGenerationChunk(message=message, generation_info=info)


def _content_logprobs(items: Sequence[TokenLogprob]) -> dict[str, Any]:
    return {"content": [token_logprob_object(item) for item in items], "refusal": None}


def _logprobs_of(generation: ChatGenerationChunk) -> dict[str, Any] | None:
    """What ChatOpenAI passes callbacks' ``on_llm_new_token`` as ``logprobs``."""
    logprobs = (generation.generation_info or {}).get("logprobs")
    return logprobs if isinstance(logprobs, dict) else None


def _tool_choice(
    choice: dict[str, Any] | str | bool | None, tools: list[dict[str, Any]]
) -> str | None:
    names = [str(t["function"]["name"]) for t in tools]
    if choice is None or choice == "auto":
        return None
    if choice is True:
        if len(names) != 1:
            raise ValueError("tool_choice=True needs exactly one tool.")
        return names[0]
    if choice is False or choice == "none":
        return "none"
    if choice in ("any", "required"):
        return "required"
    if isinstance(choice, Mapping):
        name = choice.get("function", {}).get("name") or choice.get("name")
        if not isinstance(name, str):
            raise ValueError(f"Unrecognized tool_choice {choice!r}.")
        choice = name
    if isinstance(choice, str):
        if choice not in names:
            raise ValueError(f"tool_choice {choice!r} is not one of the tools: {names}.")
        return str(choice)
    raise ValueError(f"Unrecognized tool_choice {choice!r}.")
