"""``LocalLLM``: a LangChain completion model (text in, text out) on the shared runtime."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseLLM, LangSmithParams
from langchain_core.outputs import Generation, GenerationChunk, LLMResult
from pydantic import ConfigDict, Field

from local_llm_integrations._options import CALL_OPTIONS as _CALL_OPTIONS
from local_llm_integrations._options import LocalModelOptions
from local_llm_runtime.logprobs import LegacyLogprobs
from local_llm_runtime.numbers import NotBoolFloat
from local_llm_runtime.types import Chunk, FinalChunk, TextDelta
from local_llm_runtime.validation import check_arguments

__all__ = ["LocalLLM"]

_CALL_ARGUMENTS = _CALL_OPTIONS | {"model", "system", "raw", "format", "keep_alive"}
"""Keyword arguments a call (``invoke(..., **kwargs)``, ``bind(...)``) may carry."""


class LocalLLM(LocalModelOptions, BaseLLM):
    """Completion-style access to a local GGUF model (Ollama's ``generate``).

    By default the prompt is sent as a user message through the model's chat
    template (with ``system`` if set), as Ollama does; ``raw=True`` continues
    the prompt text as is. Shares loaded models with every other adapter.

    Example:
        .. code-block:: python

            from local_llm_integrations.langchain import LocalLLM

            llm = LocalLLM(model="qwen2.5:7b")
            llm.invoke("Write a haiku about llamas.")
    """

    model_config = ConfigDict(populate_by_name=True, protected_namespaces=())

    system: str | None = None
    """System prompt (default: the one bound to the model by ``local-llm create``)."""

    raw: bool = False
    """Send the prompt without the chat template (plain text continuation)."""

    timeout: NotBoolFloat | None = Field(default=None, gt=0)
    """Seconds for each prompt, counted from the call (resolve/pull, load, queue, prompt
    and generation); past it the call raises
    :class:`~local_llm_runtime.errors.RequestTimeoutError`. ``None``: no limit."""

    @property
    def _llm_type(self) -> str:
        return "local-llm"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": self.model, "raw": self.raw, **self._server(), **self.engine_options()}

    def get_token_ids(self, text: str) -> list[int]:
        """Token ids of ``text`` from the model's own tokenizer (not GPT-2's)."""
        return self.serving_engine().tokenize(self.model, text)

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(
            ls_provider="local-llm",
            ls_model_name=str(kwargs.get("model") or self.model),
            ls_model_type="llm",
        )
        if self.temperature is not None:
            params["ls_temperature"] = self.temperature
        if self.num_predict is not None:
            params["ls_max_tokens"] = self.num_predict
        if stop or self.stop:
            params["ls_stop"] = list(stop or self.stop or [])
        return params

    def _call_args(
        self, stop: list[str] | None, kwargs: dict[str, Any]
    ) -> tuple[str, dict[str, Any]]:
        kwargs = dict(kwargs)
        model = kwargs.pop("model", None) or self.model
        overrides = {k: kwargs.pop(k) for k in list(kwargs) if k in _CALL_OPTIONS}
        if stop is not None:
            overrides["stop"] = stop
        call: dict[str, Any] = {
            "options": self.engine_options(overrides),
            "system": kwargs.pop("system", self.system),
            "raw": kwargs.pop("raw", self.raw),
            "format": kwargs.pop("format", None),
        }
        keep_alive = kwargs.pop("keep_alive", self.keep_alive)
        if keep_alive is not None:
            call["keep_alive"] = keep_alive
        check_arguments("LocalLLM call", kwargs, _CALL_ARGUMENTS)  # raises on any left
        return model, call

    def _stream(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[GenerationChunk]:
        model, call = self._call_args(stop, kwargs)
        legacy = LegacyLogprobs() if call["options"].get("logprobs") else None
        with self.serving_engine().generate_stream(
            model, prompt, timeout=self.timeout, **call
        ) as stream:
            for chunk in stream:
                generation = _generation_chunk(chunk, legacy)
                if generation is None:
                    continue
                if run_manager is not None:
                    run_manager.on_llm_new_token(generation.text, chunk=generation)
                yield generation

    async def _astream(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[GenerationChunk]:
        model, call = self._call_args(stop, kwargs)
        legacy = LegacyLogprobs() if call["options"].get("logprobs") else None
        async with self.serving_engine().agenerate_stream(
            model, prompt, timeout=self.timeout, **call
        ) as stream:
            async for chunk in stream:
                generation = _generation_chunk(chunk, legacy)
                if generation is None:
                    continue
                if run_manager is not None:
                    await run_manager.on_llm_new_token(generation.text, chunk=generation)
                yield generation

    def _generate(
        self,
        prompts: list[str],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        generations = []
        for prompt in prompts:
            final: GenerationChunk | None = None
            for chunk in self._stream(prompt, stop, run_manager, **kwargs):
                final = chunk if final is None else final + chunk
            generations.append([_as_generation(final)])
        return LLMResult(generations=generations)

    async def _agenerate(
        self,
        prompts: list[str],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        generations = []
        for prompt in prompts:
            final: GenerationChunk | None = None
            async for chunk in self._astream(prompt, stop, run_manager, **kwargs):
                final = chunk if final is None else final + chunk
            generations.append([_as_generation(final)])
        return LLMResult(generations=generations)


def _generation_chunk(chunk: Chunk, legacy: LegacyLogprobs | None) -> GenerationChunk | None:
    """One LangChain chunk, with ``generation_info["logprobs"]`` when ``legacy`` is set.

    That is OpenAI's legacy completion object, as ``langchain_openai.OpenAI`` has it:
    ``{"tokens", "token_logprobs", "top_logprobs", "text_offset"}`` (chunks concatenate
    when added).
    """
    if isinstance(chunk, TextDelta):
        info = {"logprobs": legacy.object(chunk.logprobs)} if legacy is not None else None
        return GenerationChunk(text=chunk.text, generation_info=info)
    if isinstance(chunk, FinalChunk):
        return GenerationChunk(
            text="",
            generation_info={
                "finish_reason": chunk.finish_reason,
                "model_name": chunk.model,
                "prompt_tokens": chunk.usage.prompt_tokens,
                "completion_tokens": chunk.usage.completion_tokens,
                "eval_tokens_per_s": chunk.timings.generation_tokens_per_s,
                **({"logprobs": legacy.object(())} if legacy is not None else {}),
            },
        )
    return None  # reasoning and tool calls have no place in plain completions


def _as_generation(chunk: GenerationChunk | None) -> Generation:
    if chunk is None:
        return Generation(text="")
    return Generation(text=chunk.text, generation_info=chunk.generation_info)
