"""The runtime's Ollama-named options, checked locally, then split for a remote server.

Options are validated here exactly as in-process (:func:`validate_options`: a typo
is an :class:`~local_llm_runtime.errors.UnknownOptionError`, a bad value an
:class:`~local_llm_runtime.errors.InvalidOptionError`) before anything is sent.

On the OpenAI dialect, OpenAI's own fields carry ``temperature``, ``top_p``,
``seed``, ``stop``, ``frequency_penalty``, ``presence_penalty`` and
``num_predict`` (as ``max_tokens``); ``top_k``, ``min_p`` and ``repeat_penalty``
go as the extra fields llama-server, llama_cpp.server, vLLM (``top_k``,
``min_p``) and ``local-llm serve`` accept. Load options (``num_ctx``,
``num_batch``, ``num_gpu``, ``num_thread``) are the server's own configuration
and ``typical_p``/``repeat_last_n`` have no portable field: they are not sent
(:data:`NOT_SENT_OPENAI`). On the Ollama dialect every option goes in
``options`` as is (``keep_alive``, ``logprobs`` and ``top_logprobs`` as the
request's fields). ``logprobs``/``top_logprobs`` go as each API names them
(:func:`logprob_fields`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from local_llm_runtime.options import validate_options

__all__ = [
    "NOT_SENT_OPENAI",
    "checked_options",
    "logprob_fields",
    "ollama_options",
    "openai_sampling",
]

_OPENAI_FIELDS: tuple[tuple[str, str], ...] = (
    ("temperature", "temperature"),
    ("top_p", "top_p"),
    ("seed", "seed"),
    ("frequency_penalty", "frequency_penalty"),
    ("presence_penalty", "presence_penalty"),
    ("top_k", "top_k"),
    ("min_p", "min_p"),
    ("repeat_penalty", "repeat_penalty"),
)

NOT_SENT_OPENAI = frozenset(
    {"num_ctx", "num_batch", "num_gpu", "num_thread", "typical_p", "repeat_last_n", "keep_alive"}
)
"""Options an OpenAI-compatible server has no per-request field for (not sent)."""


def checked_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """The options validated and converted as the in-process engine does.

    Raises:
        UnknownOptionError, InvalidOptionError: As :func:`validate_options`.
    """
    return validate_options(options or {})


def openai_sampling(options: Mapping[str, Any]) -> dict[str, Any]:
    """OpenAI request fields for checked options (see the module doc)."""
    body: dict[str, Any] = {}
    for option, wire in _OPENAI_FIELDS:
        value = options.get(option)
        if value is None:
            continue
        if option == "seed" and value < 0:  # -1: a random seed, OpenAI's default
            continue
        body[wire] = value
    stops = [s for s in options.get("stop") or () if s]
    if stops:
        body["stop"] = stops
    num_predict = options.get("num_predict")
    if num_predict is not None and num_predict > 0:  # -1, -2, 0: until the context is full
        body["max_tokens"] = num_predict
    return body


_TOP_LEVEL = frozenset({"keep_alive", "logprobs", "top_logprobs"})
"""Options Ollama takes beside ``options``, not in it."""


def ollama_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Ollama's ``options`` object for checked options (``keep_alive`` and logprobs excluded)."""
    return {k: v for k, v in options.items() if k not in _TOP_LEVEL and v is not None}


def logprob_fields(options: Mapping[str, Any], *, legacy: bool = False) -> dict[str, Any]:
    """The request fields asking for log-probabilities (none unless ``logprobs`` is true).

    Ollama and OpenAI chat: ``logprobs: true`` and ``top_logprobs``; OpenAI's legacy
    completions (``legacy=True``): ``logprobs`` is the number of alternatives.
    """
    if not options.get("logprobs"):
        return {}
    top = int(options.get("top_logprobs") or 0)
    if legacy:
        return {"logprobs": top}
    return {"logprobs": True, **({"top_logprobs": top} if top else {})}
