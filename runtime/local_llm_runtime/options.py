"""Ollama-named model options: one typed model, from which every option list is derived.

:class:`ModelOptions` is the single place that knows an option: its Ollama name,
type, bounds, documentation and where it goes (``load``: the pool key,
:class:`~local_llm_runtime.llama.pool.LoadOptions`; ``sampling``: per request,
:class:`~local_llm_runtime.llama.sampling.SamplingOptions`; ``request``: handled by
the engine itself, ``keep_alive``). Derived from it:

- :data:`OPTIONS` / :func:`option_table`: names, kinds and ranges used by
  :func:`validate_options` (the engine, model parameters) and :func:`parse_params`
  (``create --param``, ``/set parameter``);
- :func:`split_by_destination`: the engine's load / sampling / request split;
- the adapters' pydantic fields (``local_llm_integrations._options``): the same
  names, bounds and descriptions in LangChain and LlamaIndex.

Adding an option is one field here (plus its use in the backend and a test).
"""

from __future__ import annotations

import functools
import math
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel, ConfigDict, Field, FiniteFloat
from pydantic.fields import FieldInfo

from local_llm_runtime.errors import InvalidOptionError, UnknownOptionError
from local_llm_runtime.settings import parse_duration
from local_llm_runtime.validation import closest

__all__ = [
    "DESTINATIONS",
    "INT32_MAX",
    "MAX_THREADS",
    "OPTIONS",
    "SEED_MAX",
    "Destination",
    "ModelOptions",
    "OptionSpec",
    "field_destination",
    "option_field",
    "option_table",
    "parse_params",
    "split_by_destination",
    "validate_options",
]

INT32_MAX = 2**31 - 1
"""llama.cpp takes counts and token positions as ``int32``."""
SEED_MAX = 2**32 - 2
"""llama.cpp seeds are ``uint32``; ``2**32 - 1`` is its "random seed" marker."""
MAX_THREADS = 512
"""ggml's ``GGML_MAX_N_THREADS``: more threads crash the process."""

Destination = Literal["load", "sampling", "request"]
"""Where an option acts: ``load`` (part of the loaded instance's key: context size,
GPU layers, threads, batch), ``sampling`` (per request: the sampler and the token
budget) or ``request`` (read by the engine itself: ``keep_alive``)."""
DESTINATIONS: tuple[Destination, ...] = ("load", "sampling", "request")


def option_field(
    destination: Destination,
    title: str,
    description: str,
    *,
    ge: float | None = None,
    le: float | None = None,
    duration: bool = False,
) -> Any:
    """Declare a :class:`ModelOptions` field: unset (``None``) by default, bounded, documented.

    Use it for every option (``min_p: FiniteFloat | None = option_field("sampling", ...)``);
    the destination, title and bounds are what the rest of the code derives from.

    Args:
        destination: Where the option acts (see :data:`Destination`).
        title: A short phrase, used in error messages (``"sampling temperature"``).
        description: The documentation users read in both frameworks.
        ge: Smallest accepted value (inclusive), or ``None``.
        le: Largest accepted value (inclusive), or ``None``.
        duration: The value is a duration (``"5m"``, seconds, ``-1``), parsed by
            :func:`~local_llm_runtime.settings.parse_duration`.
    """
    extra: dict[str, Any] = {"destination": destination}
    if duration:
        extra["duration"] = True
    return Field(
        default=None, ge=ge, le=le, title=title, description=description, json_schema_extra=extra
    )


class ModelOptions(BaseModel):
    """Every option the runtime accepts, by Ollama's name (all unset by default).

    ``None`` means the model's own parameter (``local-llm create --param``) or the
    runtime default named in each description (Ollama's). Each field's
    ``json_schema_extra["destination"]`` says where it acts (see :data:`Destination`).

    Example:
        .. code-block:: python

            options = ModelOptions(temperature=0, num_ctx=8192)
            engine.chat(model, messages, options=options.model_dump(exclude_none=True))
    """

    model_config = ConfigDict(extra="forbid")

    temperature: FiniteFloat | None = option_field(
        "sampling",
        "sampling temperature",
        "Sampling temperature: higher is more creative, 0 is greedy (always the most "
        "likely token). Ollama's default: 0.8.",
        ge=0.0,
    )
    top_k: int | None = option_field(
        "sampling",
        "sample among the k most likely tokens (0 or > vocabulary: all)",
        "Sample among the k most likely tokens; 0 (or more than the vocabulary) keeps "
        "them all. Ollama's default: 40.",
        ge=0,
        le=INT32_MAX,
    )
    top_p: FiniteFloat | None = option_field(
        "sampling",
        "nucleus sampling mass",
        "Nucleus sampling: keep the smallest set of tokens whose probabilities add up to "
        "top_p. Ollama's default: 0.9.",
        ge=0.0,
        le=1.0,
    )
    min_p: FiniteFloat | None = option_field(
        "sampling",
        "minimum probability relative to the best token",
        "Drop tokens less likely than min_p times the most likely one. Ollama's default: 0.0.",
        ge=0.0,
        le=1.0,
    )
    typical_p: FiniteFloat | None = option_field(
        "sampling",
        "locally typical sampling",
        "Locally typical sampling: keep the tokens whose surprise is closest to the "
        "expected one, up to this mass; 1.0 is off. Ollama's default: 1.0.",
        ge=0.0,
        le=1.0,
    )
    repeat_penalty: FiniteFloat | None = option_field(
        "sampling",
        "penalty for repeated tokens",
        "Penalty for tokens seen in the last repeat_last_n tokens: above 1 repeats less, "
        "1.0 is off. Ollama's default: 1.1.",
        ge=0.0,
    )
    repeat_last_n: int | None = option_field(
        "sampling",
        "window for repeat_penalty (-1: the context, 0: off)",
        "How far back repeat_penalty, presence_penalty and frequency_penalty look, in "
        "tokens; 0 is off, -1 the whole context. Ollama's default: 64.",
        ge=-1,
        le=INT32_MAX,
    )
    presence_penalty: FiniteFloat | None = option_field(
        "sampling",
        "penalty for tokens already present",
        "Subtracted from the logit of every token already present in the window "
        "(OpenAI's presence penalty). Ollama's default: 0.0 (off).",
    )
    frequency_penalty: FiniteFloat | None = option_field(
        "sampling",
        "penalty by token frequency",
        "Subtracted from a token's logit once per occurrence in the window (OpenAI's "
        "frequency penalty). Ollama's default: 0.0 (off).",
    )
    seed: int | None = option_field(
        "sampling",
        "random seed (-1: a random one)",
        "Random seed. Default: a random one (also -1, as in Ollama). The same seed and "
        "request give the same output whatever ran before: a seeded request evaluates its "
        "whole prompt (no cached-prefix reuse), so it is exact also at temperature 0.",
        ge=-1,
        le=SEED_MAX,
    )
    num_predict: int | None = option_field(
        "sampling",
        "most tokens to generate (-1, -2 or 0: until the context is full)",
        "Most tokens to generate; -1 (Ollama's default), -2 or 0: until the context is "
        "full. LangChain and LlamaIndex also accept it as max_tokens.",
        ge=-2,
        le=INT32_MAX,
    )
    stop: list[str] | None = option_field(
        "sampling",
        "stop sequence (repeatable)",
        "Stop sequences: generation ends before the first one (streaming included); "
        "none by default beyond the model's end-of-turn tokens.",
    )
    num_ctx: int | None = option_field(
        "load",
        "context window in tokens",
        "Context window in tokens, prompt and answer together. Default: 4096, or the "
        "model's trained context if smaller.",
        ge=1,
        le=INT32_MAX,
    )
    num_batch: int | None = option_field(
        "load",
        "prompt batch size",
        "Prompt tokens evaluated per llama.cpp batch (at most num_ctx). Ollama's default: 512.",
        ge=1,
        le=INT32_MAX,
    )
    num_gpu: int | None = option_field(
        "load",
        "layers offloaded to the GPU (-1: auto)",
        "Layers offloaded to the GPU; -1 (default) decides from free device memory, 0 "
        "keeps the model on the CPU.",
        ge=-1,
        le=INT32_MAX,
    )
    num_thread: int | None = option_field(
        "load",
        "CPU threads",
        "CPU threads. Default: the physical cores for generation (as llama.cpp and "
        "Ollama) and every CPU for prompts, lowered before each step to the CPUs other "
        "processes leave free (no collapse on a busy machine); a value fixes both.",
        ge=1,
        le=MAX_THREADS,
    )
    logprobs: bool | None = option_field(
        "sampling",
        "return the generated tokens' log-probabilities (true/false)",
        "Return each generated token's log-probability (OpenAI's and Ollama's logprobs): "
        "the log-softmax of the model's raw logits at that position, before temperature, "
        "penalties, top-k/top-p and any grammar. Default: false.",
    )
    top_logprobs: int | None = option_field(
        "sampling",
        "alternatives per token with their log-probabilities (needs logprobs)",
        "With logprobs: also return this many most likely tokens at each position, most "
        "likely first (0-20, as OpenAI and Ollama). Default: 0.",
        ge=0,
        le=20,
    )
    keep_alive: FiniteFloat | str | None = option_field(
        "request",
        "how long the model stays loaded (e.g. 5m, -1)",
        'How long the model stays loaded after a request: a duration ("5m", "1h30m"), '
        "seconds, 0 (unload at once) or a negative value (forever). Default: 5 minutes "
        "(LOCAL_LLM_KEEP_ALIVE).",
        duration=True,
    )


@dataclass(frozen=True)
class OptionSpec:
    """One option: its type and accepted range (derived from a :class:`ModelOptions` field)."""

    kind: type
    minimum: float | None = None
    maximum: float | None = None
    repeated: bool = False
    help: str = ""
    destination: Destination = "sampling"
    description: str = ""
    duration: bool = False


def field_destination(info: FieldInfo) -> Destination | None:
    """Where an option field acts, from its metadata; ``None`` for a field that is no option."""
    extra = info.json_schema_extra
    if isinstance(extra, dict):
        for destination in DESTINATIONS:
            if extra.get("destination") == destination:
                return destination
    return None


def _kind(annotation: Any) -> tuple[type, bool]:
    """The scalar type of an option annotation and whether it is a list."""
    members = (
        get_args(annotation)
        if get_origin(annotation) in (Union, types.UnionType)
        else (annotation,)
    )
    scalars: list[Any] = []
    for member in members:
        if member is not type(None):
            scalars.append(get_args(member)[0] if get_origin(member) is Annotated else member)
    first = scalars[0]
    if get_origin(first) is list:
        (item,) = get_args(first)
        return item, True
    return first, False  # ``float | str`` (a duration) is a float


def _bounds(info: FieldInfo) -> tuple[float | None, float | None]:
    low: float | None = None
    high: float | None = None
    for item in info.metadata:
        if isinstance(item, annotated_types.Ge):
            low = item.ge  # type: ignore[assignment]  # numbers, by construction
        elif isinstance(item, annotated_types.Le):
            high = item.le  # type: ignore[assignment]
    return low, high


def option_table(model: type[ModelOptions] = ModelOptions) -> dict[str, OptionSpec]:
    """The option table of ``model``: every field as an :class:`OptionSpec`.

    Args:
        model: :class:`ModelOptions` or a subclass adding options.

    Returns:
        Option names to their kind, bounds, short help, destination and description
        (one table per model, built once).
    """
    return _option_table(model)


@functools.cache
def _option_table(model: type[ModelOptions]) -> dict[str, OptionSpec]:
    table: dict[str, OptionSpec] = {}
    for name, info in model.model_fields.items():
        destination = field_destination(info)
        if destination is None:
            raise TypeError(f"{model.__name__}.{name} has no destination (use option_field).")
        kind, repeated = _kind(info.annotation)
        low, high = _bounds(info)
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        table[name] = OptionSpec(
            kind=kind,
            minimum=low,
            maximum=high,
            repeated=repeated,
            help=info.title or name,
            destination=destination,
            description=info.description or "",
            duration=bool(extra.get("duration")),
        )
    return table


OPTIONS: dict[str, OptionSpec] = option_table()
"""The runtime's option table, derived from :class:`ModelOptions`."""


def split_by_destination(
    options: Mapping[str, Any], model: type[ModelOptions] = ModelOptions
) -> dict[Destination, dict[str, Any]]:
    """Group (validated) options by where they act.

    Args:
        options: Option names to values, as returned by :func:`validate_options`.
        model: The options model whose fields' metadata decide the destination.

    Returns:
        ``{"load": {...}, "sampling": {...}, "request": {...}}`` (every key present).

    Raises:
        UnknownOptionError: On a name ``model`` does not define.
    """
    table = option_table(model)
    out: dict[Destination, dict[str, Any]] = {d: {} for d in DESTINATIONS}
    for key, value in options.items():
        out[_spec(key, table).destination][key] = value
    return out


def _range(spec: OptionSpec) -> str:
    low, high = spec.minimum, spec.maximum
    if low is not None and high is not None:
        return f"between {low} and {high}"
    if low is not None:
        return f"at least {low}"
    if high is not None:
        return f"at most {high}"
    return "any finite number"


def _convert(key: str, spec: OptionSpec, value: Any) -> Any:
    if spec.duration:
        try:
            return parse_duration(value)
        except InvalidOptionError as exc:
            raise InvalidOptionError(f"Option {key}={value!r}: {exc}") from None
    try:
        if spec.kind is bool:
            converted: Any = _boolean(value)
        elif spec.kind is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            converted = int(value)
        elif spec.kind is float:
            if isinstance(value, bool):
                raise ValueError
            converted = float(value)
        else:
            if not isinstance(value, str):
                raise ValueError
            converted = value
    except (TypeError, ValueError, OverflowError):
        if spec.kind is bool:
            raise InvalidOptionError(
                f"Option {key}={value!r} must be true or false ({spec.help})."
            ) from None
        raise InvalidOptionError(
            f"Option {key}={value!r} must be {spec.kind.__name__} ({spec.help}), {_range(spec)}."
        ) from None
    if spec.kind is float and not math.isfinite(converted):
        bounds = "" if spec.minimum is None and spec.maximum is None else f", {_range(spec)}"
        raise InvalidOptionError(
            f"Option {key}={value!r} must be a finite number{bounds} ({spec.help})."
        )
    if spec.kind is str and not converted:
        raise InvalidOptionError(
            f"Option {key}={value!r} is empty: a {spec.help} needs at least one character."
        )
    out_of_range = (spec.minimum is not None and converted < spec.minimum) or (
        spec.maximum is not None and converted > spec.maximum
    )
    if out_of_range:
        raise InvalidOptionError(f"Option {key}={value!r} must be {_range(spec)} ({spec.help}).")
    return converted


_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


def _boolean(value: Any) -> bool:
    """A boolean option: ``True``/``False``, or their text (``create --param logprobs=true``)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError


def _check_together(options: Mapping[str, Any]) -> None:
    """Rules between options: ``top_logprobs`` above 0 needs ``logprobs`` (OpenAI's and vLLM's).

    Raises:
        InvalidOptionError: Naming both options.
    """
    top = options.get("top_logprobs")
    if top and options.get("logprobs") is not True:
        raise InvalidOptionError(
            f"Option top_logprobs={top!r} needs logprobs=true (as OpenAI's API): set "
            "logprobs=true to get the alternatives, or drop top_logprobs."
        )


def _spec(key: str, table: Mapping[str, OptionSpec]) -> OptionSpec:
    spec = table.get(key)
    if spec is None:
        known = ", ".join(sorted(table))
        match = closest(key, table)
        hint = f" Did you mean {match!r}?" if match else ""
        raise UnknownOptionError(f"Unknown option {key!r}.{hint} Known options: {known}.")
    return spec


def validate_options(
    options: Mapping[str, Any], model: type[ModelOptions] = ModelOptions
) -> dict[str, Any]:
    """Check and convert a mapping of options; return a new mapping.

    Args:
        options: Option names to values (``stop`` takes a string or a list).
        model: The options model defining the names, kinds and bounds.

    Returns:
        The converted options.

    Raises:
        UnknownOptionError: On an unknown name (naming the closest known one).
        InvalidOptionError: On a bad value, naming the option and its range, or
            ``top_logprobs`` above 0 without ``logprobs=true``.
    """
    table = option_table(model)
    out: dict[str, Any] = {}
    for key, value in options.items():
        spec = _spec(key, table)
        if spec.repeated:
            if isinstance(value, str):
                values = [value]
            elif isinstance(value, Iterable) and not isinstance(value, Mapping | bytes):
                values = list(value)
            else:
                raise InvalidOptionError(
                    f"Option {key}={value!r} must be a string or a list of strings ({spec.help})."
                )
            out[key] = [_convert(key, spec, v) for v in values]
        else:
            out[key] = _convert(key, spec, value)
    _check_together(out)
    return out


def parse_params(pairs: Iterable[str], model: type[ModelOptions] = ModelOptions) -> dict[str, Any]:
    """Parse ``KEY=VALUE`` strings (as given to ``create --param``).

    Values are text and converted as Ollama does (``temperature=0.7`` is a float,
    ``keep_alive=5m`` a duration). Repeated keys accumulate for list options
    (``stop``) and the last one wins otherwise.

    Args:
        pairs: The ``KEY=VALUE`` strings.
        model: The options model defining the names, kinds and bounds.

    Returns:
        The converted options.

    Raises:
        InvalidOptionError: On a malformed pair, an unknown key or a bad value.
    """
    table = option_table(model)
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InvalidOptionError(f"Expected KEY=VALUE, got {pair!r}.")
        spec = _spec(key, table)
        converted = _convert(key, spec, value)
        if spec.repeated:
            out.setdefault(key, []).append(converted)
        else:
            out[key] = converted
    _check_together(out)
    return out
