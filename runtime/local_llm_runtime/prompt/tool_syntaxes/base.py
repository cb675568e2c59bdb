r"""What every tool-call syntax is made of, and the streaming core they share.

:class:`ToolSyntax` is one syntax: how to recognise it in a chat template
(:meth:`~ToolSyntax.detect`), what the template needs from the messages
(:meth:`~ToolSyntax.prepare_message`), how to read it from a stream
(:meth:`~ToolSyntax.step` and :meth:`~ToolSyntax.finish`, driving a
:class:`CallStream`) and how to force it (:meth:`~ToolSyntax.grammar`).
:class:`CallStream` holds the buffer and the rules common to every syntax:
text that is safe to show streams out at once, a block that is not a valid call
comes back as the text it was, whitespace around a call is dropped.
"""

from __future__ import annotations

import abc
import json
import re
import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from local_llm_runtime.prompt.tool_schema import validate_arguments
from local_llm_runtime.prompt.tool_syntaxes.grammar import tool_call_rules

__all__ = ["CallStream", "Event", "JsonEnd", "ToolCall", "ToolSyntax", "partial_suffix"]

DECODER = json.JSONDecoder(strict=False)  # tolerate raw control characters in strings
"""The JSON decoder every syntax reads call objects with."""


@dataclass(frozen=True)
class ToolCall:
    """One parsed call of a tool."""

    id: str
    """A fresh id, ``call_`` and 24 hex digits."""
    name: str
    """The tool's name, one of the names offered."""
    arguments: dict[str, Any]
    """The decoded arguments."""
    error: str | None = None
    """Why the arguments do not validate against the tool's schema; ``None`` when they do.

    A call with an error must not be run: adapters report it as an invalid call."""


Event = str | ToolCall


def _new_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


def _to_call(
    obj: object, tool_names: Collection[str], schemas: Mapping[str, Mapping[str, Any]]
) -> ToolCall | None:
    """Turn one decoded call object into a ToolCall, or ``None`` if it is not one.

    A call of an offered tool whose arguments do not match ``schemas[name]``
    comes back with its ``error`` set.
    """
    if not isinstance(obj, dict):
        return None
    call: dict[str, Any] = obj
    if isinstance(call.get("function"), dict):  # OpenAI-shaped {"function": {...}}
        call = call["function"]
    name = call.get("name")
    args = call.get("arguments", call.get("parameters", {}))
    if isinstance(args, str):
        try:
            args = DECODER.decode(args) if args.strip() else {}
        except ValueError:
            return None
    if not isinstance(name, str) or name not in tool_names or not isinstance(args, dict):
        return None
    schema = schemas.get(name)
    error = validate_arguments(schema, args) if schema is not None else None
    return ToolCall(_new_id(), name, args, error)


_ARGUMENT_KEYS = frozenset({"arguments", "parameters", "function"})
"""A repaired call must say its arguments (or be OpenAI-shaped), not default to ``{}``."""

_MAX_REPAIR = 2
"""The most closing brackets a call may lack and still be repaired."""


def _closers(text: str) -> str | None:
    """The brackets that would close the JSON ``text`` was cut from, if that is all it lacks.

    Small models sometimes end a call one or two ``}`` short. ``None`` when
    nothing is open, a string is unterminated, or the brackets do not nest.
    """
    stack: list[str] = []
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "{[":
            stack.append("}" if char == "{" else "]")
        elif char in "}]" and (not stack or stack.pop() != char):
            return None
    if in_string or not stack or len(stack) > _MAX_REPAIR:
        return None
    return "".join(reversed(stack))


def _to_calls(
    text: str,
    tool_names: Collection[str],
    schemas: Mapping[str, Mapping[str, Any]],
    *,
    repair: bool,
) -> list[ToolCall] | None:
    """Decode a JSON object or list of call objects; ``None`` unless all are calls.

    With ``repair``, a call that lacks only its last closing bracket(s) is
    completed; it still has to name an offered tool and carry its arguments
    explicitly. Only output that ended by itself is ever repaired.
    """
    text = text.strip()
    try:
        value = DECODER.decode(text)
    except ValueError:
        closers = _closers(text) if repair else None
        if closers is None:
            return None
        try:
            value = DECODER.decode(text + closers)
        except ValueError:
            return None
        items = value if isinstance(value, list) else [value]
        if not all(isinstance(i, dict) and _ARGUMENT_KEYS & set(i) for i in items):
            return None
    items = value if isinstance(value, list) else [value]
    calls = [_to_call(item, tool_names, schemas) for item in items]
    if not calls or any(call is None for call in calls):
        return None
    return [call for call in calls if call is not None]


def partial_suffix(text: str, marker: str) -> int:
    """Return the length of the longest end of ``text`` that begins ``marker`` (not all of it)."""
    for size in range(min(len(text), len(marker) - 1), 0, -1):
        if marker.startswith(text[-size:]):
            return size
    return 0


class JsonEnd:
    """Find, incrementally, where the JSON array or object at the start of a text ends."""

    def __init__(self) -> None:
        self.pos = 0
        self.depth = 0
        self.in_string = False
        self.escaped = False

    def scan(self, text: str) -> int | None:
        """Return the end offset once the value is complete, else remember progress."""
        for index in range(self.pos, len(text)):
            char = text[index]
            if self.in_string:
                if self.escaped:
                    self.escaped = False
                elif char == "\\":
                    self.escaped = True
                elif char == '"':
                    self.in_string = False
            elif char == '"':
                self.in_string = True
            elif char in "[{":
                self.depth += 1
            elif char in "]}":
                self.depth -= 1
                if self.depth == 0:
                    return index + 1
        self.pos = len(text)
        return None


Mode = Literal["start", "text", "block", "plain"]
"""Where a stream is: before anything shown, in text, inside a call block, in text for good."""


class CallStream:
    """Streaming parser of tool calls in one model output, in one :class:`ToolSyntax`.

    Feed it the output text as it arrives; it returns, in order, plain text that is
    safe to show and each :class:`ToolCall` as soon as its block is complete. Held
    back are only text that could begin a marker and trailing whitespace (so that
    whitespace around a call is dropped). Marker text and call JSON never come out
    as text, unless the block is invalid (bad JSON, unknown tool): then its raw text
    comes out as text, nothing dropped. A call whose arguments break its tool's
    schema comes out as a :class:`ToolCall` with ``error`` set.

    The syntax reads the buffer through the attributes and helpers below
    (:meth:`open_block`, :meth:`block`, :meth:`text`, :meth:`text_until`).
    """

    def __init__(
        self,
        syntax: ToolSyntax,
        tool_names: Collection[str],
        *,
        schemas: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        """Create a parser for one output.

        Args:
            syntax: The model's tool-call syntax.
            tool_names: Names of the tools offered; calls to other names stay text.
            schemas: Parameter schemas by tool name (closed, see
                :func:`local_llm_runtime.prompt.tool_schema.tool_schemas`); a call whose
                arguments do not validate gets :attr:`ToolCall.error`. Tools without
                an entry are not checked.
        """
        self.syntax = syntax
        self.names = frozenset(tool_names)
        self.schemas: Mapping[str, Mapping[str, Any]] = dict(schemas or {})
        self.buf = ""
        """Output received and not consumed yet."""
        self.mode: Mode = "start"
        self.scan = JsonEnd()
        self.marker = ""
        """The marker that opened the current block."""
        self.close = ""
        """The marker that closes it (``""``: the JSON value's end does)."""
        self.space = ""
        """Whitespace cut before the current block."""
        self.after_call = False
        """The last thing emitted was a call."""
        self.repair = True
        """A call short of its closing brackets may be completed (set by :meth:`finish`)."""
        self._out: list[Event] = []

    def feed(self, text: str) -> list[Event]:
        """Take the next delta of output.

        Args:
            text: The next piece of the model's output (any split point).

        Returns:
            Text pieces and completed calls, in order (adjacent text merged).
        """
        self.buf += text
        while self.buf and self._step():
            pass
        return self._take()

    def finish(self, *, ended_naturally: bool) -> list[Event]:
        """End the output: complete what can be completed, return the rest as text.

        Args:
            ended_naturally: The generation ended by itself (an end-of-generation
                token or a stop sequence). Only then is a last call that lacks its
                closing brackets (or ``hermes``' closing tag) completed. An output
                cut short (token limit, cancel, timeout) may have been cut inside a
                value (``{"amount": 100`` of ``1000``): its unfinished call comes
                back as text, never as a call.

        Returns:
            The last text pieces and calls.
        """
        self.repair = ended_naturally
        rest, self.buf = self.buf, ""
        if self.mode == "block" and not ended_naturally:
            self.text(self.marker + rest)  # a call cut short is not a call
        else:
            self.syntax.finish(self, rest)
        return self._take()

    def _step(self) -> bool:
        """Consume from :attr:`buf`; ``False`` when more text is needed."""
        if self.mode == "plain":
            self.text(self.buf)
            self.buf = ""
            return False
        return self.syntax.step(self)

    # -- helpers for the syntaxes

    def open_block(self, marker: str, rest: str, close: str = "") -> None:
        """Enter a call block opened by ``marker``; ``rest`` is what follows it."""
        self.buf, self.marker, self.close = rest, marker, close
        self.mode, self.scan = "block", JsonEnd()

    def text_until(self, marker: str, close: str = "") -> bool:
        """In text: stream it up to ``marker``, and open a block there (closed by ``close``).

        Returns:
            ``True`` when a block was opened, ``False`` when more text is needed.
        """
        self.mode = "text"
        index = self.buf.find(marker)
        if index >= 0:
            before = self.buf[:index]
            content = before.rstrip()
            self.text(content)
            self.space = before[len(content) :]
            self.open_block(marker, self.buf[index + len(marker) :], close)
            return True
        keep = partial_suffix(self.buf, marker)
        content = self.buf[: len(self.buf) - keep].rstrip()
        self.text(content)
        self.buf = self.buf[len(content) :]
        return False

    def block(self, raw: str, body: str | None) -> None:
        """Emit the calls of one block, or else its raw text (with the space cut before it).

        Args:
            raw: The block as the model wrote it, markers included.
            body: The JSON of a call object or a list of them; ``None``: not a call.
        """
        calls = (
            _to_calls(body, self.names, self.schemas, repair=self.repair)
            if body is not None
            else None
        )
        if calls is None:
            self.text(raw)
        else:
            self._out.extend(calls)
            self.space, self.after_call = "", True

    def text(self, text: str) -> None:
        """Emit text (after the whitespace cut before a block that turned out not to be one)."""
        text, self.space = self.space + text, ""
        if self.after_call:
            text = text.lstrip()
        if not text:
            return
        self.after_call = False
        if self._out and isinstance(self._out[-1], str):
            self._out[-1] += text
        else:
            self._out.append(text)

    def _take(self) -> list[Event]:
        out, self._out = self._out, []
        return out


class ToolSyntax(abc.ABC):
    """One tool-call syntax. Subclass it in a module of its own and list it in the registry.

    Class attributes say what is data; methods say what is behaviour. Only
    :meth:`step` and :meth:`grammar_root` have no default.
    """

    name: ClassVar[str]
    """The syntax's name (``hermes``), what :attr:`ChatTemplate.tool_format` returns."""
    markers: ClassVar[tuple[str, ...]] = ()
    """Text whose presence in a chat template announces the syntax."""
    arguments_key: ClassVar[str] = "arguments"
    """The key a forced call writes its arguments under."""

    def detect(self, template_source: str | None, metadata: Mapping[str, Any]) -> bool:
        """Whether a model with this template and GGUF metadata writes calls this way.

        Args:
            template_source: The Jinja chat template, ``None`` when the model has none.
            metadata: GGUF metadata (``general.architecture``, ``general.name``...),
                possibly empty.
        """
        del metadata
        return bool(template_source) and any(m in str(template_source) for m in self.markers)

    def prepare_message(self, message: dict[str, Any]) -> dict[str, Any]:
        """A normalised OpenAI-style message as the template expects it (default: as is)."""
        return message

    def parser(
        self,
        tool_names: Collection[str],
        *,
        schemas: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> CallStream:
        """A streaming parser of one output (see :class:`CallStream`)."""
        return CallStream(self, tool_names, schemas=schemas)

    @abc.abstractmethod
    def step(self, stream: CallStream) -> bool:
        """Consume from ``stream.buf`` (mode ``start``, ``text`` or ``block``).

        Returns:
            ``True`` to be called again, ``False`` when more text is needed.
        """

    def finish(self, stream: CallStream, rest: str) -> None:
        """End an output that ended by itself or not inside a block; ``rest`` is what was held.

        The default: an unclosed block is text unless the syntax says otherwise.
        """
        if stream.mode == "block":
            stream.block(stream.marker + rest, None)
        else:
            stream.text(rest)

    @abc.abstractmethod
    def grammar_root(self, parallel: bool) -> str:
        """The GBNF ``root`` rule's body around ``call-root`` (one call object)."""

    def grammar(
        self, tools: Sequence[Mapping[str, Any]], *, name: str | None = None, parallel: bool = False
    ) -> str:
        """A grammar that forces a call in this syntax (see :func:`tool_call_gbnf`).

        Raises:
            InvalidOptionError: If no tool (or no tool called ``name``) is given, or a
                schema cannot be turned into a grammar.
        """
        rules = tool_call_rules(tools, name=name, key=self.arguments_key)
        return f"root ::= {self.grammar_root(parallel)}\n{rules}\n"


FENCE = re.compile(r"```(?:json)?[ \t]*\n")
"""A Markdown code fence opening (small models fence their calls)."""
SEPARATORS = "; \t\r\n"
"""What may separate calls written one after the other."""
