r"""The tool-call syntaxes models are trained on: one module per syntax, listed here.

How to add a syntax: write ``prompt/tool_syntaxes/<name>.py`` with a subclass of
:class:`~.base.ToolSyntax` (``name``, the template ``markers`` that announce it,
``step``/``finish`` to parse a stream with :class:`~.base.CallStream`'s helpers,
``grammar_root`` to force it; ``prepare_message`` if its template needs messages
changed), then add one instance to :data:`SYNTAXES` below. Detection tries the
entries in order and takes the first whose ``detect`` says yes; a template none
recognises gets :data:`DEFAULT` (Hermes) and one warning per template.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Mapping
from typing import Any

from local_llm_runtime.errors import InvalidOptionError
from local_llm_runtime.prompt.tool_syntaxes.base import CallStream, ToolCall, ToolSyntax
from local_llm_runtime.prompt.tool_syntaxes.hermes import Hermes
from local_llm_runtime.prompt.tool_syntaxes.llama3_json import Llama3Json
from local_llm_runtime.prompt.tool_syntaxes.mistral import Mistral

__all__ = [
    "DEFAULT",
    "SYNTAXES",
    "CallStream",
    "ToolCall",
    "ToolSyntax",
    "detect_syntax",
    "get_syntax",
    "syntax_for",
    "warn_unknown_syntax",
]

logger = logging.getLogger(__name__)

SYNTAXES: list[ToolSyntax] = [Hermes(), Mistral(), Llama3Json()]
"""Every known syntax, in detection order (the first that detects wins)."""

DEFAULT: ToolSyntax = SYNTAXES[0]
"""Hermes: the syntax of the ChatML fallback, assumed when none is detected."""


def get_syntax(name: str) -> ToolSyntax:
    """The registered syntax called ``name``.

    Raises:
        InvalidOptionError: If no syntax has that name.
    """
    for syntax in SYNTAXES:
        if syntax.name == name:
            return syntax
    known = ", ".join(s.name for s in SYNTAXES)
    raise InvalidOptionError(f"Unknown tool-call format {name!r}; known: {known}.")


def detect_syntax(
    template_source: str | None, metadata: Mapping[str, Any] | None = None
) -> ToolSyntax | None:
    """The first registered syntax that recognises this template, ``None`` if none does."""
    for syntax in SYNTAXES:
        if syntax.detect(template_source, metadata or {}):
            return syntax
    return None


def syntax_for(
    template_source: str | None, metadata: Mapping[str, Any] | None = None
) -> ToolSyntax:
    """The syntax a model writes tool calls in; :data:`DEFAULT` when none is recognised."""
    return detect_syntax(template_source, metadata) or DEFAULT


_warned: set[str] = set()
_warned_lock = threading.Lock()


def warn_unknown_syntax(
    template_source: str | None, metadata: Mapping[str, Any] | None = None
) -> bool:
    """Log, once per template and model, that no syntax recognises this template.

    A model without a template (the ChatML fallback, Hermes by construction) or
    with a recognised one is not warned about.

    Returns:
        Whether a warning was logged now.
    """
    if not template_source or detect_syntax(template_source, metadata) is not None:
        return False
    digest = hashlib.sha256(template_source.encode("utf-8")).hexdigest()[:12]
    model = str((metadata or {}).get("general.name") or "a model")
    key = f"{digest}:{model}"
    with _warned_lock:
        if key in _warned:
            return False
        _warned.add(key)
    logger.warning(
        "%s: its chat template (sha256 %s...) shows no known tool-call syntax (known: %s). "
        "Tool calls are parsed and forced %s-style (%s), which this model may not write. "
        "To teach the runtime its syntax, add a module to local_llm_runtime/prompt/"
        "tool_syntaxes/ and list it in SYNTAXES (see that package's docstring).",
        model,
        digest,
        ", ".join(s.name for s in SYNTAXES),
        DEFAULT.name.capitalize(),
        '<tool_call>{"name": ..., "arguments": {...}}</tool_call>',
    )
    return True
