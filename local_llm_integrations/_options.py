"""Option fields shared by every adapter: Ollama's names, typed, documented once."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from local_llm_runtime.interface import EngineProtocol
from local_llm_runtime.options import validate_options
from local_llm_runtime.validation import check_arguments

__all__ = [
    "CALL_OPTIONS",
    "OPTION_FIELDS",
    "LocalModelOptions",
    "ReasoningSetting",
    "ENGINE_FIELD_DOC",
    "check_constructor_arguments",
    "engine_or_default",
    "known_arguments",
    "reasoning_mode",
]

#: The Ollama-named option fields of :class:`LocalModelOptions`, in the engine's names.
OPTION_FIELDS = (
    "temperature", "top_p", "top_k", "min_p", "repeat_penalty", "repeat_last_n", "seed",
    "num_ctx", "num_predict", "stop", "num_gpu", "num_thread",
)  # fmt: skip

#: Option names a caller may override per call (``max_tokens`` is ``num_predict``).
CALL_OPTIONS = frozenset({*OPTION_FIELDS, "max_tokens"})

ReasoningSetting = bool | Literal["separate", "hide", "inline"] | None

ENGINE_FIELD_DOC = (
    "The engine that serves this model (any EngineProtocol implementation): None (default) is "
    "the process-wide in-process llama.cpp engine, local_llm_runtime.default_engine(), looked "
    "up at call time; pass local_llm_runtime.testing.FakeEngine in tests, or another backend. "
    "Not serialized."
)


def engine_or_default(engine: EngineProtocol | None) -> EngineProtocol:
    """``engine``, or the process-wide in-process engine when it is ``None``.

    Looked up at call time: constructing an adapter imports no llama_cpp.
    """
    if engine is not None:
        return engine
    import local_llm_runtime

    return local_llm_runtime.default_engine()


def known_arguments(cls: type[BaseModel], extra: Iterable[str] = ()) -> frozenset[str]:
    """Every keyword a pydantic adapter class accepts: its fields, their aliases, ``extra``."""
    names = set(extra)
    for name, info in cls.model_fields.items():
        names.add(name)
        for alias in (info.alias, info.validation_alias):
            if isinstance(alias, str):
                names.add(alias)
    return frozenset(names)


def check_constructor_arguments(
    cls: type[BaseModel], data: Mapping[str, Any], extra: Iterable[str] = ()
) -> None:
    """Refuse constructor keywords ``cls`` would silently ignore (pydantic's default).

    Raises:
        UnknownOptionError: Naming each unknown keyword and the closest known one
            (``temprature`` -> ``temperature``).
    """
    check_arguments(cls.__name__, data, known_arguments(cls, extra))


def reasoning_mode(setting: ReasoningSetting) -> Literal["separate", "hide", "inline"]:
    """Map the adapters' ``reasoning`` field onto the engine's reasoning mode.

    ``None``/``True``/``"separate"``: reasoning is kept apart from the answer
    (LangChain ``reasoning_content``, LlamaIndex thinking blocks);
    ``False``/``"hide"``: dropped; ``"inline"``: left in the text as the model wrote it.

    Raises:
        ValueError: On any other value.
    """
    if setting is None or setting is True:
        return "separate"
    if setting is False:
        return "hide"
    if setting in ("separate", "hide", "inline"):
        return setting
    raise ValueError(
        f"reasoning must be True, False, 'separate', 'hide' or 'inline', not {setting!r}."
    )


class LocalModelOptions(BaseModel):
    """The options every adapter accepts (see Ollama's Modelfile parameters)."""

    model_config = ConfigDict(
        populate_by_name=True, protected_namespaces=(), arbitrary_types_allowed=True
    )

    model: str
    """Model reference: ``qwen2.5:7b``, ``hf.co/org/repo-GGUF:Q4_K_M``, a ``.gguf`` path,
    or a name made with ``local-llm create``. Pulled on first use if missing."""

    temperature: float | None = None
    """Sampling temperature (default 0.8); 0 is greedy."""

    top_p: float | None = None
    """Nucleus sampling: keep the smallest token set with this much probability (0.9)."""

    top_k: int | None = None
    """Sample among the k most likely tokens (40)."""

    min_p: float | None = None
    """Drop tokens less likely than min_p times the best token (0.0)."""

    repeat_penalty: float | None = None
    """Penalty for repeating recent tokens (1.1)."""

    repeat_last_n: int | None = None
    """How far back ``repeat_penalty`` looks, in tokens (64; 0 off, -1 the whole context)."""

    seed: int | None = None
    """Random seed; the same seed and request give the same output whatever ran before.

    A seeded request evaluates its whole prompt (no cached-prefix reuse), so it is exact
    also at ``temperature=0``; unseeded greedy requests reuse the prefix and can differ
    from a fresh run where two tokens nearly tie (see the README, "Concurrency")."""

    num_ctx: int | None = None
    """Context window in tokens (default: 4096, or the model's trained maximum if smaller)."""

    num_predict: int | None = Field(default=None, alias="max_tokens")
    """Maximum tokens to generate (alias ``max_tokens``; default: until the context is full)."""

    stop: list[str] | None = None
    """Stop sequences: generation ends before the first one, streaming included."""

    num_gpu: int | None = None
    """Layers offloaded to the GPU (default: automatic from free device memory)."""

    num_thread: int | None = None
    """CPU threads (default: the physical cores)."""

    keep_alive: float | str | None = None
    """How long the model stays loaded after a request (``"5m"``, seconds, ``0``, ``-1``)."""

    reasoning: ReasoningSetting = None
    """Reasoning models' ``<think>`` text: ``True``/``None`` keeps it separate from the
    answer, ``False`` drops it, ``"inline"`` leaves it in the text."""

    preload: bool = False
    """Load the model when the object is created (otherwise on the first call)."""

    engine: EngineProtocol | None = Field(default=None, exclude=True, repr=False)
    """The engine that serves this model: ``None`` (default) is the process-wide
    in-process engine (:func:`local_llm_runtime.default_engine`, looked up at call time);
    pass :class:`local_llm_runtime.testing.FakeEngine` in tests, or another backend.
    Excluded from serialization."""

    def __init__(self, **data: Any) -> None:
        """Create the adapter; unknown or misspelt keywords and bad option values raise.

        Raises:
            UnknownOptionError: For a keyword the class does not know (with the
                closest known name), instead of ignoring it.
            InvalidOptionError: For an option value out of range (NaN, ...).
        """
        check_constructor_arguments(type(self), data)
        super().__init__(**data)
        validate_options(self.engine_options())
        if self.keep_alive is not None:
            validate_options({"keep_alive": self.keep_alive})

    @model_validator(mode="after")
    def _maybe_preload(self) -> LocalModelOptions:
        if self.preload:
            engine_or_default(self.engine).preload(self.model, options=self.engine_options())
        return self

    def engine_options(self, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        """The Ollama-named options that are set, with per-call overrides applied."""
        options: dict[str, Any] = {}
        for name in OPTION_FIELDS:
            value = getattr(self, name)
            if value is not None:
                options[name] = value
        for key, value in (overrides or {}).items():
            if value is not None:
                options["num_predict" if key == "max_tokens" else key] = value
        return options
