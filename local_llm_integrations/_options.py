"""Option fields shared by every adapter: Ollama's names, typed, documented once.

The fields are derived from the runtime's one options model,
:class:`~local_llm_runtime.options.ModelOptions`: :func:`option_fields_mixin` turns
its fields into a pydantic mixin with the same names, types, bounds and
descriptions (default ``None``: the model's parameter or the runtime default).
The LangChain and LlamaIndex adapters inherit the mixins below, so an option
added to ``ModelOptions`` appears, validated and documented, in both frameworks.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Collection, Iterable, Mapping
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, cast

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    SecretStr,
    create_model,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic.json_schema import SkipJsonSchema

from local_llm_runtime.errors import InvalidOptionError
from local_llm_runtime.interface import EngineProtocol
from local_llm_runtime.options import (
    DESTINATIONS,
    Destination,
    ModelOptions,
    field_destination,
    validate_options,
)
from local_llm_runtime.settings import check_base_url
from local_llm_runtime.validation import check_arguments

__all__ = [
    "CALL_OPTIONS",
    "ENGINE_DESTINATIONS",
    "OPTION_FIELDS",
    "EmbeddingOptionFields",
    "LangChainOptionFields",
    "LlamaIndexOptionFields",
    "LocalModelOptions",
    "OptionFields",
    "ReasoningSetting",
    "RemoteFields",
    "ENGINE_FIELD_DOC",
    "EngineSetting",
    "adapter_option_fields",
    "check_constructor_arguments",
    "engine_or_default",
    "known_arguments",
    "option_fields_mixin",
    "reasoning_mode",
]

ENGINE_DESTINATIONS: tuple[Destination, ...] = ("load", "sampling")
"""Options the adapters pass in the engine's ``options`` (``keep_alive`` goes apart)."""
EMBEDDING_DESTINATIONS: tuple[Destination, ...] = ("load", "request")
"""Options an embedding adapter has: no sampling."""

#: The Ollama-named option fields passed as engine ``options``, in the engine's names.
OPTION_FIELDS: tuple[str, ...] = tuple(
    name
    for name, info in ModelOptions.model_fields.items()
    if field_destination(info) in ENGINE_DESTINATIONS
)

#: Option names a caller may override per call (``max_tokens`` is ``num_predict``).
CALL_OPTIONS = frozenset({*OPTION_FIELDS, "max_tokens"})


def adapter_option_fields(
    model: type[ModelOptions] = ModelOptions,
    *,
    destinations: Collection[Destination] = DESTINATIONS,
    aliases: Mapping[str, str] | None = None,
) -> dict[str, tuple[Any, FieldInfo]]:
    """The adapters' pydantic fields for the options of ``model``.

    Each field keeps the option's name, type, bounds (``ge``/``le``, finite floats),
    title, description and ``destination`` metadata; its default is ``None`` (the
    model's own parameter, or the runtime default the description names).

    Args:
        model: :class:`ModelOptions` or a subclass adding options.
        destinations: Which options to include (an embedding adapter has no sampling).
        aliases: Extra accepted keyword per option name (``{"num_predict": "max_tokens"}``).

    Returns:
        ``{name: (annotation, FieldInfo)}``, as :func:`pydantic.create_model` takes it.
    """
    fields: dict[str, tuple[Any, FieldInfo]] = {}
    for name, info in model.model_fields.items():
        if field_destination(info) not in destinations:
            continue
        extra = info.json_schema_extra
        field = cast(  # Field(default=None) is typed as its default; it is a FieldInfo
            FieldInfo,
            Field(
                default=None,
                alias=(aliases or {}).get(name),
                title=info.title,
                description=info.description,
                json_schema_extra=dict(extra) if isinstance(extra, dict) else None,
            ),
        )
        field.metadata = list(info.metadata)  # the bounds: Ge, Le, ...
        fields[name] = (info.annotation, field)
    return fields


logger = logging.getLogger(__name__)


def _picklable(value: Any) -> bool:
    try:
        pickle.dumps(value)
    except Exception:
        return False
    return True


class OptionFields(BaseModel):
    """Base of the generated option mixins: reads their values and checks them."""

    options_model: ClassVar[type[ModelOptions]] = ModelOptions
    """The options model the fields were derived from."""

    @classmethod
    def option_names(cls, destinations: Collection[str] = ENGINE_DESTINATIONS) -> list[str]:
        """The option fields of this class acting at ``destinations``."""
        return [
            name
            for name, info in cls.model_fields.items()
            if field_destination(info) in destinations
        ]

    def option_values(self, destinations: Collection[str] = ENGINE_DESTINATIONS) -> dict[str, Any]:
        """The options that are set (not ``None``), by Ollama name."""
        values = {name: getattr(self, name) for name in self.option_names(destinations)}
        return {name: value for name, value in values.items() if value is not None}

    @model_validator(mode="before")
    @classmethod
    def _runtime_option_rules(cls, data: Any) -> Any:
        return cls.apply_option_rules(data) if isinstance(data, dict) else data

    @classmethod
    def apply_option_rules(cls, data: Mapping[str, Any]) -> dict[str, Any]:
        """Constructor options follow the runtime's rules, as per-call options do.

        Checked before pydantic's coercion: ``True`` is not a number (pydantic would
        make it 1), a single ``stop`` string is one stop sequence, and an option given
        under two names (``max_tokens`` and ``num_predict``) with different values is
        an error. The adapters call it first in ``__init__`` (so the error is the
        runtime's own); pydantic runs it again for ``model_validate``.

        Returns:
            ``data`` with a ``stop`` string made a list.

        Raises:
            InvalidOptionError: Naming the option and its accepted values.
        """
        data = dict(data)
        values: dict[str, Any] = {}
        for name, info in cls.model_fields.items():
            if field_destination(info) not in DESTINATIONS:
                continue
            given = [k for k in dict.fromkeys((name, info.alias)) if k and data.get(k) is not None]
            if len(given) == 2 and data[given[0]] != data[given[1]]:
                raise InvalidOptionError(
                    f"{given[1]}={data[given[1]]!r} and {given[0]}={data[given[0]]!r} are the "
                    f"same option; pass only one of them."
                )
            if given:
                values[name] = data[given[-1]]
        checked = validate_options(values, model=cls.options_model)
        if isinstance(values.get("stop"), str):
            data.pop("stop", None)
            data["stop"] = checked["stop"]
        return data

    def __setattr__(self, name: str, value: Any) -> None:
        """Assigning ``engine`` is checked like the constructor argument.

        Raises:
            ValueError: For an ``engine`` that is not an engine instance.
            AttributeError: For ``_engine`` (0.1's private attribute, now the
                public ``engine`` field): it would otherwise be silently ignored.
        """
        if name == "_engine":
            raise AttributeError(
                "_engine is gone: set the public field instead, "
                f"{type(self).__name__}(model=..., engine=...) or adapter.engine = ..."
            )
        if name == "engine":
            value = _check_engine(value)
        super().__setattr__(name, value)

    def __getstate__(self) -> dict[Any, Any]:
        """Pickle state that never changes ``self`` (LlamaIndex's own removes attributes).

        An attribute that cannot be pickled (an engine holding locks and a loaded
        model, a cache of it) goes back to its default in the copy, with a warning;
        ``engine=None`` there means the process-wide engine of the unpickling process.
        """
        state = BaseModel.__getstate__(self)
        fields = dict(state["__dict__"])
        for key, value in fields.items():
            if not _picklable(value):
                info = type(self).model_fields.get(key)
                fields[key] = info.get_default(call_default_factory=True) if info else None
                logger.warning(
                    "%s.%s (%s) cannot be pickled; the copy uses the default (%r).",
                    type(self).__name__,
                    key,
                    type(value).__name__,
                    fields[key],
                )
        private = state.get("__pydantic_private__")
        if private:
            private = {k: (v if _picklable(v) else None) for k, v in private.items()}
        return {**state, "__dict__": fields, "__pydantic_private__": private}

    def check_option_values(self) -> None:
        """Check every set option as the runtime will (ranges, NaN, empty stop, durations).

        Raises:
            InvalidOptionError: Naming the option and its accepted range.
        """
        validate_options(self.option_values(DESTINATIONS), model=type(self).options_model)


def option_fields_mixin(
    model: type[ModelOptions] = ModelOptions,
    *,
    destinations: Collection[Destination] = DESTINATIONS,
    aliases: Mapping[str, str] | None = None,
    name: str | None = None,
) -> type[OptionFields]:
    """A pydantic mixin with :func:`adapter_option_fields` as its fields.

    An adapter inherits it first (``class ChatLocal(Mixin, BaseChatModel)``).

    Args:
        model: :class:`ModelOptions` or a subclass adding options.
        destinations: Which options to include.
        aliases: Extra accepted keyword per option name.
        name: The class name (default: derived from ``model``).

    Returns:
        The mixin class; its ``options_model`` is ``model``.
    """
    fields = adapter_option_fields(model, destinations=destinations, aliases=aliases)
    mixin = create_model(  # type: ignore[call-overload]
        name or f"{model.__name__}Fields",
        __base__=OptionFields,
        __module__=__name__,
        **fields,
    )
    mixin.options_model = model
    return mixin  # type: ignore[no-any-return]


if TYPE_CHECKING:  # the type checker sees ModelOptions' attributes, the same fields

    class LangChainOptionFields(OptionFields, ModelOptions):
        """Every option; ``max_tokens`` is accepted for ``num_predict``."""

    class LlamaIndexOptionFields(OptionFields, ModelOptions):
        """Every option (LlamaIndex's aliases are mapped by the adapter)."""

    class EmbeddingOptionFields(OptionFields):
        """Load options and ``keep_alive``."""

else:
    LangChainOptionFields = option_fields_mixin(
        aliases={"num_predict": "max_tokens"}, name="LangChainOptionFields"
    )
    LlamaIndexOptionFields = option_fields_mixin(name="LlamaIndexOptionFields")
    EmbeddingOptionFields = option_fields_mixin(
        destinations=EMBEDDING_DESTINATIONS, name="EmbeddingOptionFields"
    )


ReasoningSetting = bool | Literal["separate", "hide", "inline"] | None

ENGINE_FIELD_DOC = (
    "The engine that serves this model (an instance of any EngineProtocol implementation): "
    "None (default) is the remote engine of base_url when it is set, else the process-wide "
    "engine, local_llm_runtime.default_engine(), looked up at call time; pass "
    "local_llm_runtime.testing.FakeEngine(...) in tests, or another backend. Not serialized, "
    "not in the JSON schema; a pickled copy keeps it only if the engine itself pickles "
    "(otherwise the copy uses the process-wide engine, with a warning)."
)


def _check_engine(value: Any) -> EngineProtocol | None:
    if value is None:
        return None
    if isinstance(value, type) or not isinstance(value, EngineProtocol):
        what = f"the class {value.__name__}" if isinstance(value, type) else type(value).__name__
        raise ValueError(
            f"engine must be an engine instance (EngineProtocol: chat_stream, embed, ...), "
            f"not {what}; for example engine=FakeEngine(responses=[...]) or leave it None."
        )
    return value


EngineSetting = Annotated[EngineProtocol | None, PlainValidator(_check_engine), SkipJsonSchema()]
"""The adapters' ``engine`` field type: an engine instance or ``None`` (no JSON schema)."""


def engine_or_default(
    engine: EngineProtocol | None,
    base_url: str | None = None,
    api_key: SecretStr | None = None,
) -> EngineProtocol:
    """``engine``; else the remote engine of ``base_url``; else the process-wide engine.

    Looked up at call time: constructing an adapter imports no llama_cpp and
    opens no connection. The remote engine of a configuration is created once per
    process and shared by every adapter configured the same way
    (:func:`local_llm_runtime.backends.remote_engine`); the process-wide engine is
    remote when ``LOCAL_LLM_BASE_URL`` is set, in-process llama.cpp otherwise.

    Raises:
        InvalidOptionError: For a malformed ``LOCAL_LLM_*`` remote variable (named).
    """
    if engine is not None:
        return engine
    if base_url is not None:
        from local_llm_runtime.backends import remote_engine, remote_settings_for

        return remote_engine(remote_settings_for(base_url, api_key))
    import local_llm_runtime

    return local_llm_runtime.default_engine()


class RemoteFields(BaseModel):
    """``base_url`` / ``api_key``: serve an adapter from an existing server instead.

    Mixed into every adapter. With ``base_url`` set, calls go to that
    OpenAI-compatible or Ollama server (vLLM, SGLang, llama-server, Ollama,
    ``local-llm serve``) through the remote engine of that configuration, shared
    process-wide; without it, nothing changes (``LOCAL_LLM_BASE_URL``, or in-process
    llama.cpp). Setting both ``engine`` and ``base_url`` is an error.
    """

    # A rejected base_url may hold credentials: validation errors never echo inputs.
    model_config = ConfigDict(hide_input_in_errors=True)

    base_url: str | None = Field(
        default=None,
        description=(
            "URL of an existing OpenAI-compatible or Ollama server that serves this model "
            "(http://gpu-box:8000/v1, http://host:11434); None (default): "
            "LOCAL_LLM_BASE_URL if set, else in-process llama.cpp. The dialect, model map, "
            "timeouts and retries come from the LOCAL_LLM_* variables."
        ),
    )
    api_key: SecretStr | None = Field(
        default=None,
        exclude=True,
        repr=False,
        description=(
            "Key for base_url's server (sent as a bearer token); never shown or serialized. "
            "None: LOCAL_LLM_API_KEY when base_url is LOCAL_LLM_BASE_URL's server, else none."
        ),
    )

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return check_base_url(value)
        except InvalidOptionError as exc:
            raise ValueError(f"base_url: {exc}") from None

    @model_validator(mode="after")
    def _engine_or_base_url(self) -> Any:
        _check_one_source(getattr(self, "engine", None), self.base_url)
        return self

    def __setattr__(self, name: str, value: Any) -> None:
        """Assigning ``engine`` or ``base_url`` keeps the two exclusive.

        Raises:
            ValueError: When both would be set.
        """
        if name == "engine" and value is not None:
            _check_one_source(value, self.base_url)
        elif name == "base_url" and value is not None:
            _check_one_source(getattr(self, "engine", None), value)
        super().__setattr__(name, value)

    def serving_engine(self) -> EngineProtocol:
        """The engine this adapter calls (see :func:`engine_or_default`)."""
        return engine_or_default(getattr(self, "engine", None), self.base_url, self.api_key)


def _check_one_source(engine: Any, base_url: str | None) -> None:
    if engine is not None and base_url is not None:
        raise ValueError(
            f"engine and base_url={base_url!r} both say which engine serves the model; "
            "pass only one of them (base_url selects a remote engine for that server)."
        )


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
    if issubclass(cls, OptionFields):
        cls.apply_option_rules(data)


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


class LocalModelOptions(LangChainOptionFields, RemoteFields):
    """The options every LangChain adapter accepts (see Ollama's Modelfile parameters).

    The Ollama-named option fields (``temperature`` ... ``keep_alive``) come from
    :class:`~local_llm_runtime.options.ModelOptions`; ``max_tokens`` is ``num_predict``.
    """

    model_config = ConfigDict(populate_by_name=True, protected_namespaces=())

    model: str
    """Model reference: ``qwen2.5:7b``, ``hf.co/org/repo-GGUF:Q4_K_M``, a ``.gguf`` path,
    or a name made with ``local-llm create``. Pulled on first use if missing."""

    reasoning: ReasoningSetting = None
    """Reasoning models' ``<think>`` text: ``True``/``None`` keeps it separate from the
    answer, ``False`` drops it, ``"inline"`` leaves it in the text."""

    preload: bool = False
    """Load the model when the object is created (otherwise on the first call)."""

    engine: EngineSetting = Field(default=None, exclude=True, repr=False)
    """The engine that serves this model: ``None`` (default) is the process-wide
    in-process engine (:func:`local_llm_runtime.default_engine`, looked up at call time);
    pass :class:`local_llm_runtime.testing.FakeEngine` in tests, or another backend.
    Excluded from serialization."""

    def __init__(self, **data: Any) -> None:
        """Create the adapter; unknown or misspelt keywords and bad option values raise.

        Raises:
            UnknownOptionError: For a keyword the class does not know (with the
                closest known name), instead of ignoring it.
            ValidationError: For an option value out of its field's bounds (NaN, ...).
            InvalidOptionError: For a value the runtime refuses (an empty stop
                sequence, a malformed ``keep_alive``).
        """
        check_constructor_arguments(type(self), data)
        super().__init__(**data)
        self.check_option_values()

    @property
    def lc_secrets(self) -> dict[str, str]:
        """LangChain's serialization writes a reference to the variable, never the key."""
        return {"api_key": "LOCAL_LLM_API_KEY"}

    @model_validator(mode="after")
    def _maybe_preload(self) -> LocalModelOptions:
        if self.preload:
            self.serving_engine().preload(self.model, options=self.engine_options())
        return self

    def _server(self) -> dict[str, str]:
        """``{"base_url": ...}`` when remote (part of the LLM cache key), else ``{}``."""
        return {"base_url": self.base_url} if self.base_url else {}

    def engine_options(self, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        """The Ollama-named options that are set, with per-call overrides applied."""
        options = self.option_values()
        for key, value in (overrides or {}).items():
            if value is not None:
                options["num_predict" if key == "max_tokens" else key] = value
        return options
