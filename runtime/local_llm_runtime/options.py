"""Ollama-named model options: one table of names, types and bounds.

Used to validate ``create --param KEY=VALUE`` and, later, keyword options of the
adapters, so every entry point accepts the same names with the same meaning.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from local_llm_runtime.errors import InvalidOptionError
from local_llm_runtime.settings import parse_duration

__all__ = ["OPTIONS", "OptionSpec", "parse_params", "validate_options"]


@dataclass(frozen=True)
class OptionSpec:
    """One option: its type and accepted range."""

    kind: type
    minimum: float | None = None
    maximum: float | None = None
    repeated: bool = False
    help: str = ""


OPTIONS: dict[str, OptionSpec] = {
    "temperature": OptionSpec(float, 0.0, None, help="sampling temperature"),
    "top_p": OptionSpec(float, 0.0, 1.0, help="nucleus sampling mass"),
    "top_k": OptionSpec(int, 0, None, help="sample among the k most likely tokens"),
    "min_p": OptionSpec(float, 0.0, 1.0, help="minimum probability relative to the best token"),
    "typical_p": OptionSpec(float, 0.0, 1.0, help="locally typical sampling"),
    "repeat_penalty": OptionSpec(float, 0.0, None, help="penalty for repeated tokens"),
    "repeat_last_n": OptionSpec(int, -1, None, help="window for repeat_penalty"),
    "presence_penalty": OptionSpec(float, None, None, help="penalty for tokens already present"),
    "frequency_penalty": OptionSpec(float, None, None, help="penalty by token frequency"),
    "seed": OptionSpec(int, None, None, help="random seed"),
    "num_ctx": OptionSpec(int, 1, None, help="context window in tokens"),
    "num_predict": OptionSpec(int, -2, None, help="maximum tokens to generate (-1: no limit)"),
    "num_batch": OptionSpec(int, 1, None, help="prompt batch size"),
    "num_gpu": OptionSpec(int, -1, None, help="layers offloaded to the GPU (-1: auto)"),
    "num_thread": OptionSpec(int, 1, None, help="CPU threads"),
    "stop": OptionSpec(str, repeated=True, help="stop sequence (repeatable)"),
    "keep_alive": OptionSpec(float, help="how long the model stays loaded (e.g. 5m, -1)"),
}


def _convert(key: str, spec: OptionSpec, value: Any) -> Any:
    if key == "keep_alive":
        return parse_duration(value)
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
    except (TypeError, ValueError):
        raise InvalidOptionError(
            f"Option {key}={value!r} must be {spec.kind.__name__}" + f" ({spec.help})."
        ) from None
    if spec.minimum is not None and converted < spec.minimum:
        raise InvalidOptionError(f"Option {key}={value!r} must be at least {spec.minimum}.")
    if spec.maximum is not None and converted > spec.maximum:
        raise InvalidOptionError(f"Option {key}={value!r} must be at most {spec.maximum}.")
    return converted


def _spec(key: str) -> OptionSpec:
    spec = OPTIONS.get(key)
    if spec is None:
        known = ", ".join(sorted(OPTIONS))
        raise InvalidOptionError(f"Unknown option {key!r}; known options: {known}.")
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
            values = [value] if isinstance(value, str) else list(value)
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
