"""Per-call arguments -> one runtime request (pure functions, no I/O).

LlamaIndex passes options as keyword arguments to ``chat``/``complete`` (and
through ``chat_with_tools``/``structured_predict``). Here the instance's fields
and those keyword arguments become the engine's Ollama-named ``options`` plus
the request-level settings (tools, tool choice, format, reasoning, keep-alive).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from local_llm_integrations._options import CALL_OPTIONS, ReasoningSetting, reasoning_mode
from local_llm_runtime.prompt.reasoning import ReasoningMode
from local_llm_runtime.validation import check_arguments

__all__ = [
    "CALL_ARGUMENTS",
    "OPTION_NAMES",
    "ReasoningMode",
    "ReasoningSetting",
    "Request",
    "build_request",
    "reasoning_mode",
    "to_runtime_tools",
    "tool_choice_for",
]

logger = logging.getLogger(__name__)

OPTION_NAMES: tuple[str, ...] = tuple(sorted(CALL_OPTIONS - {"max_tokens"}))
"""Ollama-named sampling/load options accepted as fields and as per-call kwargs
(derived from :class:`~local_llm_runtime.options.ModelOptions`)."""

_ALIASES = {"max_tokens": "num_predict", "allow_parallel_tool_calls": "parallel_tool_calls"}
_REASONING_KEYS = ("reasoning", "thinking", "think")
_BOOKKEEPING = frozenset({"formatted", "verbose", "error_on_no_tool_call", "error_on_tool_error"})
"""Arguments LlamaIndex's own code passes along to ``chat``/``complete``; they have no
effect on the request (``formatted`` is read by ``complete`` itself)."""

CALL_ARGUMENTS: frozenset[str] = frozenset(
    {*OPTION_NAMES, *_ALIASES, *_REASONING_KEYS, *_BOOKKEEPING}
    | {"model", "format", "keep_alive", "tools", "tool_choice", "tool_required"}
    | {"parallel_tool_calls"}
)
"""Every keyword argument ``chat``/``complete`` (and their async/stream forms) accept."""


def to_runtime_tools(tools: Sequence[Any] | None) -> list[dict[str, Any]]:
    """Convert LlamaIndex tools (or OpenAI tool dicts) to OpenAI-style tool dicts.

    Args:
        tools: ``BaseTool`` objects (anything with ``metadata.to_openai_tool``) or
            dicts already in OpenAI format.

    Returns:
        ``[{"type": "function", "function": {"name", "description", "parameters"}}]``.
    """
    out: list[dict[str, Any]] = []
    for tool in tools or ():
        if isinstance(tool, Mapping):
            out.append(dict(tool))
            continue
        metadata = getattr(tool, "metadata", None)
        if metadata is None or not hasattr(metadata, "to_openai_tool"):
            raise TypeError(f"Not a LlamaIndex tool or an OpenAI tool dict: {tool!r}.")
        out.append(dict(metadata.to_openai_tool(skip_length_check=True)))
    return out


def tool_choice_for(choice: Any, tool_required: bool = False) -> str:
    """Normalize LlamaIndex's ``tool_choice``/``tool_required`` to the engine's.

    Args:
        choice: ``None``, ``"auto"``, ``"none"``, ``"required"``/``"any"``, a tool
            name, or ``{"type": "function", "function": {"name": ...}}``.
        tool_required: LlamaIndex's flag: the model must call some tool.

    Returns:
        ``"auto"``, ``"none"``, ``"required"`` or a tool name.
    """
    if isinstance(choice, Mapping):
        function = choice.get("function")
        name = function.get("name") if isinstance(function, Mapping) else choice.get("name")
        if not isinstance(name, str):
            raise ValueError(f"Unrecognized tool_choice {choice!r}.")
        return name
    if choice is None or choice == "auto":
        return "required" if tool_required else "auto"
    if choice == "any":
        return "required"
    if isinstance(choice, str):
        return choice
    raise ValueError(f"Unrecognized tool_choice {choice!r}.")


@dataclass(frozen=True)
class Request:
    """Everything one engine call needs besides the messages."""

    model: str
    options: dict[str, Any] = field(default_factory=dict)
    """Ollama-named options (only those set)."""
    reasoning: ReasoningMode = "separate"
    format: Mapping[str, Any] | Literal["json"] | None = None
    tools: list[dict[str, Any]] = field(default_factory=list)
    tool_choice: str = "auto"
    parallel_tool_calls: bool = True
    keep_alive: float | str | None = None

    def chat_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``Engine.chat_stream`` / ``achat_stream``."""
        kwargs: dict[str, Any] = {
            "options": self.options,
            "reasoning": self.reasoning,
            "format": self.format,
        }
        if self.tools:
            kwargs["tools"] = self.tools
            kwargs["tool_choice"] = self.tool_choice
            kwargs["parallel_tool_calls"] = self.parallel_tool_calls
        if self.keep_alive is not None:
            kwargs["keep_alive"] = self.keep_alive
        return kwargs

    def generate_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for a raw ``Engine.generate_stream`` / ``agenerate_stream``."""
        return {
            "raw": True,
            "format": self.format,
            "options": self.options,
            "keep_alive": self.keep_alive,
        }


def build_request(
    defaults: Mapping[str, Any],
    kwargs: Mapping[str, Any],
    *,
    option_names: Collection[str] = OPTION_NAMES,
) -> Request:
    """Merge an instance's fields with per-call keyword arguments.

    Args:
        defaults: The instance's settings: ``model``, the :data:`OPTION_NAMES`,
            ``reasoning``, ``format``, ``keep_alive`` (``None`` = unset).
        kwargs: Per-call arguments; they override ``defaults``. Recognized: the
            option names, ``max_tokens`` (alias of ``num_predict``), ``model``,
            ``format``, ``tools``, ``tool_choice``, ``tool_required``,
            ``parallel_tool_calls``,
            ``reasoning``/``thinking``/``think`` and ``keep_alive``; the
            bookkeeping arguments LlamaIndex passes along (``formatted``,
            ``verbose``, ``error_on_no_tool_call``, ``error_on_tool_error``) are
            accepted and have no effect.
        option_names: The engine options among ``defaults`` and ``kwargs`` (the
            adapter's option fields; default :data:`OPTION_NAMES`).

    Returns:
        The request.

    Raises:
        UnknownOptionError: For any other argument (a typo such as
            ``temprature`` would otherwise be ignored), naming the closest known one.
    """
    options = {name: defaults[name] for name in option_names if defaults.get(name) is not None}
    reasoning: ReasoningSetting = defaults.get("reasoning")
    fmt = defaults.get("format")
    keep_alive = defaults.get("keep_alive")
    model = str(defaults["model"])
    tools: list[dict[str, Any]] = []
    choice: Any = None
    tool_required = False
    parallel = True
    unknown: list[str] = []
    for key, value in kwargs.items():
        name = _ALIASES.get(key, key)
        if name in option_names:
            if value is not None:
                options[name] = value
        elif name in _REASONING_KEYS:
            reasoning = value
        elif name == "format":
            fmt = value
        elif name == "keep_alive":
            keep_alive = value if value is not None else keep_alive
        elif name == "model":
            model = str(value) if value else model
        elif name == "tools":
            tools = to_runtime_tools(value)
        elif name == "tool_choice":
            choice = value
        elif name == "tool_required":
            tool_required = bool(value)
        elif name == "parallel_tool_calls":
            parallel = bool(value)
        elif name not in _BOOKKEEPING:
            unknown.append(key)
    check_arguments("LocalLLM call", unknown, CALL_ARGUMENTS | set(option_names))
    return Request(
        model=model,
        options=options,
        reasoning=reasoning_mode(reasoning),
        format=fmt,
        tools=tools,
        tool_choice=tool_choice_for(choice, tool_required) if tools else "auto",
        parallel_tool_calls=parallel,
        keep_alive=keep_alive,
    )
