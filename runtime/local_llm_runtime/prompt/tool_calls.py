r"""Tool calls in a model's own syntax: detect it, parse it while streaming, force it.

Chat models write tool calls in the format they were trained on, announced by
their chat template. Each format is one module of :mod:`.tool_syntaxes`
(``hermes``: Qwen2.5, Hermes, the ChatML fallback; ``mistral``: ``[TOOL_CALLS]``;
``llama3``: Llama 3.1+ JSON), listed in its registry; this module is the API
the engine and the tests use, by format name.

:class:`ToolCallParser` reads the output delta by delta and returns text that is safe
to show and completed :class:`ToolCall` objects; a block whose JSON is invalid or
names an unknown tool comes back as the text it was, and a call whose arguments do
not match the tool's JSON schema comes back with :attr:`ToolCall.error` set.
:func:`tool_call_gbnf` and :func:`json_schema_gbnf` build llama.cpp grammars that
force a valid call or a JSON value matching a schema. Nothing here imports a
framework or loads a model.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from local_llm_runtime.prompt.tool_syntaxes import get_syntax, syntax_for
from local_llm_runtime.prompt.tool_syntaxes.base import CallStream, Event, ToolCall, ToolSyntax
from local_llm_runtime.prompt.tool_syntaxes.grammar import json_schema_gbnf

__all__ = [
    "Event",
    "ToolCall",
    "ToolCallParser",
    "ToolFormat",
    "detect_tool_format",
    "json_schema_gbnf",
    "parse_tool_calls",
    "tool_call_gbnf",
]

ToolFormat = str
"""The name of a registered tool-call syntax (``hermes``, ``mistral``, ``llama3``, ...)."""


def detect_tool_format(
    template_source: str | None, metadata: Mapping[str, Any] | None = None
) -> ToolFormat:
    """Tell which tool-call syntax a chat template teaches its model.

    Args:
        template_source: The Jinja chat template (``tokenizer.chat_template``), or ``None``.
        metadata: The model's GGUF metadata, when known.

    Returns:
        The name of the first registered syntax that recognises it, ``"hermes"`` by default.
    """
    return syntax_for(template_source, metadata).name


def _syntax(fmt: ToolFormat | ToolSyntax) -> ToolSyntax:
    return fmt if isinstance(fmt, ToolSyntax) else get_syntax(fmt)


class ToolCallParser(CallStream):
    """Streaming parser of tool calls in one model output (see :class:`CallStream`)."""

    def __init__(
        self,
        fmt: ToolFormat | ToolSyntax,
        tool_names: Collection[str],
        *,
        schemas: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        """Create a parser for one output.

        Args:
            fmt: The model's tool-call format (see :func:`detect_tool_format`), or
                the syntax itself.
            tool_names: Names of the tools offered; calls to other names stay text.
            schemas: Parameter schemas by tool name (closed, see
                :func:`local_llm_runtime.prompt.tool_schema.tool_schemas`); a call whose
                arguments do not validate gets :attr:`ToolCall.error`. Tools without
                an entry are not checked.

        Raises:
            InvalidOptionError: If ``fmt`` is not a registered format.
        """
        super().__init__(_syntax(fmt), tool_names, schemas=schemas)


def parse_tool_calls(
    fmt: ToolFormat | ToolSyntax,
    text: str,
    tool_names: Collection[str],
    *,
    ended_naturally: bool,
    schemas: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[str, list[ToolCall]]:
    """Parse a whole output.

    Args:
        fmt: The model's tool-call format.
        text: The whole output.
        tool_names: Names of the tools offered.
        ended_naturally: The generation ended by itself (end-of-generation token
            or stop sequence), not by a token limit, cancel, timeout or error;
            only then is a call short of its closing brackets completed.
        schemas: Parameter schemas by tool name, to set :attr:`ToolCall.error`.

    Returns:
        The text with the call blocks removed, and the calls in order (invalid
        ones included, with ``error`` set).
    """
    parser = ToolCallParser(fmt, tool_names, schemas=schemas)
    events = parser.feed(text) + parser.finish(ended_naturally=ended_naturally)
    plain = "".join(event for event in events if isinstance(event, str))
    return plain, [event for event in events if isinstance(event, ToolCall)]


def tool_call_gbnf(
    fmt: ToolFormat | ToolSyntax,
    tools: Sequence[Mapping[str, Any]],
    *,
    name: str | None = None,
    parallel: bool = False,
) -> str:
    """Build a grammar that forces a tool call in the model's own format.

    Args:
        fmt: The model's tool-call format.
        tools: OpenAI-style tools ``{"type": "function", "function": {"name",
            "description", "parameters"}}``.
        name: The tool to call; ``None`` lets the model choose one of ``tools``.
        parallel: Allow one or more calls instead of exactly one.

    Returns:
        A GBNF grammar (root rule ``root``) for ``llama_cpp.LlamaGrammar.from_string``:
        every completion it allows parses with :class:`ToolCallParser` into valid
        calls whose arguments match the tools' JSON schemas.

    Raises:
        InvalidOptionError: If ``fmt`` is unknown, no tool (or no tool called
            ``name``) is given, or a schema cannot be turned into a grammar.
    """
    return _syntax(fmt).grammar(tools, name=name, parallel=parallel)
