"""Ollama-named model options: one table of names, types and bounds.

Used to validate ``create --param KEY=VALUE`` and, later, keyword options of the
adapters, so every entry point accepts the same names with the same meaning.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from local_llm_runtime.errors import InvalidOptionError, UnknownOptionError
from local_llm_runtime.settings import parse_duration
from local_llm_runtime.validation import closest

__all__ = [
    "INT32_MAX",
    "MAX_THREADS",
    "OPTIONS",
    "SEED_MAX",
    "OptionSpec",
    "parse_params",
    "validate_options",
]


@dataclass(frozen=True)
class OptionSpec:
    """One option: its type and accepted range."""

    kind: type
    minimum: float | None = None
    maximum: float | None = None
    repeated: bool = False
    help: str = ""


INT32_MAX = 2**31 - 1
"""llama.cpp takes counts and token positions as ``int32``."""
SEED_MAX = 2**32 - 2
"""llama.cpp seeds are ``uint32``; ``2**32 - 1`` is its "random seed" marker."""
MAX_THREADS = 512
"""ggml's ``GGML_MAX_N_THREADS``: more threads crash the process."""

OPTIONS: dict[str, OptionSpec] = {
    "temperature": OptionSpec(float, 0.0, None, help="sampling temperature"),
    "top_p": OptionSpec(float, 0.0, 1.0, help="nucleus sampling mass"),
    "top_k": OptionSpec(
        int, 0, INT32_MAX, help="sample among the k most likely tokens (0 or > vocabulary: all)"
    ),
    "min_p": OptionSpec(float, 0.0, 1.0, help="minimum probability relative to the best token"),
    "typical_p": OptionSpec(float, 0.0, 1.0, help="locally typical sampling"),
    "repeat_penalty": OptionSpec(float, 0.0, None, help="penalty for repeated tokens"),
    "repeat_last_n": OptionSpec(
        int, -1, INT32_MAX, help="window for repeat_penalty (-1: the context, 0: off)"
    ),
    "presence_penalty": OptionSpec(float, None, None, help="penalty for tokens already present"),
    "frequency_penalty": OptionSpec(float, None, None, help="penalty by token frequency"),
    "seed": OptionSpec(int, -1, SEED_MAX, help="random seed (-1: a random one)"),
    "num_ctx": OptionSpec(int, 1, INT32_MAX, help="context window in tokens"),
    "num_predict": OptionSpec(
        int, -2, INT32_MAX, help="most tokens to generate (-1, -2 or 0: until the context is full)"
    ),
    "num_batch": OptionSpec(int, 1, INT32_MAX, help="prompt batch size"),
    "num_gpu": OptionSpec(int, -1, INT32_MAX, help="layers offloaded to the GPU (-1: auto)"),
    "num_thread": OptionSpec(int, 1, MAX_THREADS, help="CPU threads"),
    "stop": OptionSpec(str, repeated=True, help="stop sequence (repeatable)"),
    "keep_alive": OptionSpec(float, help="how long the model stays loaded (e.g. 5m, -1)"),
}


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
    if key == "keep_alive":
        try:
            return parse_duration(value)
        except InvalidOptionError as exc:
            raise InvalidOptionError(f"Option {key}={value!r}: {exc}") from None
    try:
        if spec.kind is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            converted: Any = int(value)
        elif spec.kind is float:
            if isinstance(value, bool):
                raise ValueError
            converted = float(value)
        else:
            if not isinstance(value, str):
                raise ValueError
            converted = value
    except (TypeError, ValueError, OverflowError):
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


def _spec(key: str) -> OptionSpec:
    spec = OPTIONS.get(key)
    if spec is None:
        known = ", ".join(sorted(OPTIONS))
        match = closest(key, OPTIONS)
        hint = f" Did you mean {match!r}?" if match else ""
        raise UnknownOptionError(f"Unknown option {key!r}.{hint} Known options: {known}.")
    return spec


def validate_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Check and convert a mapping of options; return a new mapping.

    Args:
        options: Option names to values (``stop`` takes a string or a list).

    Returns:
        The converted options.

    Raises:
        InvalidOptionError: On an unknown name or a bad value.
    """
    out: dict[str, Any] = {}
    for key, value in options.items():
        spec = _spec(key)
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
    return out


def parse_params(pairs: Iterable[str]) -> dict[str, Any]:
    """Parse ``KEY=VALUE`` strings (as given to ``create --param``).

    Repeated keys accumulate for list options (``stop``) and the last one wins
    otherwise.

    Args:
        pairs: The ``KEY=VALUE`` strings.

    Returns:
        The converted options.

    Raises:
        InvalidOptionError: On a malformed pair, an unknown key or a bad value.
    """
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InvalidOptionError(f"Expected KEY=VALUE, got {pair!r}.")
        spec = _spec(key)
        converted = _convert(key, spec, value)
        if spec.repeated:
            out.setdefault(key, []).append(converted)
        else:
            out[key] = converted
    return out
