r"""Tool calls in a model's own syntax: detect it, parse it while streaming, force it.

Chat models write tool calls in the format they were trained on, announced by
their chat template:

* ``hermes`` (Qwen2.5, Hermes, the ChatML fallback): ``<tool_call>\n{"name": ...,
  "arguments": {...}}\n</tool_call>``, one block per call;
* ``mistral``: ``[TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]``, or the newer
  ``[TOOL_CALLS]name[ARGS]{...}``;
* ``llama3`` (Llama 3.1+): the whole answer is ``{"name": ..., "parameters": {...}}``,
  optionally after ``<|python_tag|>``, several calls separated by ``;`` or newlines.

:class:`ToolCallParser` reads the output delta by delta and returns text that is safe
to show and completed :class:`ToolCall` objects; a block whose JSON is invalid or
names an unknown tool comes back as the text it was, and a call whose arguments do
not match the tool's JSON schema comes back with :attr:`ToolCall.error` set.
:func:`tool_call_gbnf` and :func:`json_schema_gbnf` build llama.cpp grammars that
force a valid call or a JSON value matching a schema. Nothing here imports a
framework or loads a model.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from local_llm_runtime.errors import InvalidOptionError
from local_llm_runtime.prompt.json_schema_grammar import schema_to_gbnf
from local_llm_runtime.prompt.tool_schema import normalize_tools, validate_arguments

__all__ = [
    "ToolCall",
    "ToolCallParser",
    "ToolFormat",
    "detect_tool_format",
    "json_schema_gbnf",
    "parse_tool_calls",
    "tool_call_gbnf",
]

ToolFormat = Literal["hermes", "llama3", "mistral"]

_FORMAT_MARKERS: tuple[tuple[str, ToolFormat], ...] = (
    ("<tool_call>", "hermes"),  # Qwen2.5, Hermes 2/3
    ("[TOOL_CALLS]", "mistral"),
    ("<|python_tag|>", "llama3"),
    ("ipython", "llama3"),
)
_PYTHON_TAG = "<|python_tag|>"
_HERMES_OPEN, _HERMES_CLOSE = "<tool_call>", "</tool_call>"
_MISTRAL_OPEN, _MISTRAL_ARGS, _MISTRAL_CALL_ID = "[TOOL_CALLS]", "[ARGS]", "[CALL_ID]"
_SEPARATORS = "; \t\r\n"
_FENCE = re.compile(r"```(?:json)?[ \t]*\n")
_DECODER = json.JSONDecoder(strict=False)  # tolerate raw control characters in strings


def detect_tool_format(template_source: str | None) -> ToolFormat:
    """Tell which tool-call syntax a chat template teaches its model.

    Args:
        template_source: The Jinja chat template (``tokenizer.chat_template``), or ``None``.

    Returns:
        The format of the first marker found in the template, ``"hermes"`` by default.
    """
    for marker, fmt in _FORMAT_MARKERS:
        if template_source and marker in template_source:
            return fmt
    return "hermes"


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
            args = _DECODER.decode(args) if args.strip() else {}
        except ValueError:
            return None
    if not isinstance(name, str) or name not in tool_names or not isinstance(args, dict):
        return None
    schema = schemas.get(name)
    error = validate_arguments(schema, args) if schema is not None else None
    return ToolCall(_new_id(), name, args, error)


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


_ARGUMENT_KEYS = frozenset({"arguments", "parameters", "function"})
"""A repaired call must say its arguments (or be OpenAI-shaped), not default to ``{}``."""

_MAX_REPAIR = 2
"""The most closing brackets a call may lack and still be repaired."""


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
        value = _DECODER.decode(text)
    except ValueError:
        closers = _closers(text) if repair else None
        if closers is None:
            return None
        try:
            value = _DECODER.decode(text + closers)
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


def _partial_suffix(text: str, marker: str) -> int:
    """Return the length of the longest end of ``text`` that begins ``marker`` (not all of it)."""
    for size in range(min(len(text), len(marker) - 1), 0, -1):
        if marker.startswith(text[-size:]):
            return size
    return 0


class _JsonEnd:
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


Event = str | ToolCall


class ToolCallParser:
    """Streaming parser of tool calls in one model output.

    Feed it the output text as it arrives; it returns, in order, plain text that is
    safe to show and each :class:`ToolCall` as soon as its block is complete. Held
    back are only text that could begin a marker and trailing whitespace (so that
    whitespace around a call is dropped). Marker text and call JSON never come out
    as text, unless the block is invalid (bad JSON, unknown tool): then its raw text
    comes out as text, nothing dropped. A call whose arguments break its tool's
    schema comes out as a :class:`ToolCall` with ``error`` set.
    """

    def __init__(
        self,
        fmt: ToolFormat,
        tool_names: Collection[str],
        *,
        schemas: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        """Create a parser for one output.

        Args:
            fmt: The model's tool-call format (see :func:`detect_tool_format`).
            tool_names: Names of the tools offered; calls to other names stay text.
            schemas: Parameter schemas by tool name (closed, see
                :func:`local_llm_runtime.prompt.tool_schema.tool_schemas`); a call whose
                arguments do not validate gets :attr:`ToolCall.error`. Tools without
                an entry are not checked.

        Raises:
            InvalidOptionError: If ``fmt`` is not a known format.
        """
        if fmt not in ("hermes", "llama3", "mistral"):
            raise InvalidOptionError(f"Unknown tool-call format {fmt!r}.")
        self._fmt: ToolFormat = fmt
        self._names = frozenset(tool_names)
        self._schemas: Mapping[str, Mapping[str, Any]] = dict(schemas or {})
        self._buf = ""
        self._mode: Literal["start", "text", "block", "plain"] = "start"
        self._scan = _JsonEnd()
        self._marker = ""  # the marker that opened the current block
        self._close = ""  # the marker that closes it ("": the JSON value's end does)
        self._space = ""  # whitespace cut before the current block
        self._after_call = False
        self._repair = True
        self._out: list[Event] = []

    def feed(self, text: str) -> list[Event]:
        """Take the next delta of output.

        Args:
            text: The next piece of the model's output (any split point).

        Returns:
            Text pieces and completed calls, in order (adjacent text merged).
        """
        self._buf += text
        while self._buf and self._step():
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
        self._repair = ended_naturally
        rest, self._buf = self._buf, ""
        if self._mode == "block" and not ended_naturally:
            self._text(self._marker + rest)  # a call cut short is not a call
        elif self._mode == "block" and self._fmt == "hermes":
            body = rest[: len(rest) - _partial_suffix(rest, self._close)] if self._close else rest
            self._block(self._marker + rest, body)
        elif self._mode == "block" and self._fmt == "llama3":
            self._block(rest, rest)  # a call cut short at the end may still be completed
        elif self._mode == "block":
            self._block(self._marker + rest, None)
        elif self._fmt == "llama3" and self._mode == "text":
            self._text(rest.lstrip(_SEPARATORS))
        else:
            self._text(rest)
        return self._take()

    # -- steps: each consumes from self._buf; False when it needs more text

    def _step(self) -> bool:
        if self._mode == "plain":
            self._text(self._buf)
            self._buf = ""
            return False
        if self._fmt == "llama3":
            return self._llama3_step()
        if self._mode == "block":
            return self._hermes_block() if self._fmt == "hermes" else self._mistral_block()
        return self._text_step()

    def _open_block(self, marker: str, rest: str, close: str = "") -> None:
        self._buf, self._marker, self._close = rest, marker, close
        self._mode, self._scan = "block", _JsonEnd()

    def _hermes_start(self) -> bool | None:
        """Take a JSON call that opens the output (or follows a call), bare or fenced.

        Small models (Qwen2.5-Coder-0.5B among them) often skip the tags, and
        write parallel calls as JSON objects after the first call, separated by
        commas or newlines. Returns ``None`` once the text is known to be plain.
        """
        stripped = self._buf.lstrip()
        if self._after_call:
            stripped = stripped.lstrip(",").lstrip()
        space = self._buf[: len(self._buf) - len(stripped)]
        fence = _FENCE.match(stripped)
        rest = stripped[fence.end() :].lstrip() if fence else stripped
        fence_line = stripped.startswith("`") and len(stripped) < 16 and "\n" not in stripped
        if not rest or (fence_line and not fence):
            return False  # wait for the first character after the fence, or the fence line
        if rest[0] != "{":
            return None
        self._space = space
        if fence:
            self._open_block(stripped[: len(stripped) - len(rest)], rest, "```")
        else:
            self._open_block("", rest)
        return True

    def _text_step(self) -> bool:
        """Text between blocks (hermes, mistral): stream it up to a possible marker."""
        if self._fmt == "mistral" and self._mode == "start":
            # [TOOL_CALLS] is a control token that detokenizing may drop: a list of
            # objects that opens the output is taken as the call list.
            stripped = self._buf.lstrip()
            opened = stripped[1:].lstrip()
            if not stripped or (stripped[0] == "[" and not opened):
                return False
            if _MISTRAL_OPEN.startswith(stripped):
                return False
            if stripped[0] == "[" and opened[0] == "{":
                self._space, self._mode = self._buf[: len(self._buf) - len(stripped)], "text"
                self._open_block("", stripped)
                return True
        if self._fmt == "hermes" and (self._mode == "start" or self._after_call):
            started = self._hermes_start()
            if started is not None:
                return started
        self._mode = "text"
        marker = _HERMES_OPEN if self._fmt == "hermes" else _MISTRAL_OPEN
        index = self._buf.find(marker)
        if index >= 0:
            before = self._buf[:index]
            content = before.rstrip()
            self._text(content)
            self._space = before[len(content) :]
            close = _HERMES_CLOSE if self._fmt == "hermes" else ""
            self._open_block(marker, self._buf[index + len(marker) :], close)
            return True
        keep = _partial_suffix(self._buf, marker)
        content = self._buf[: len(self._buf) - keep].rstrip()
        self._text(content)
        self._buf = self._buf[len(content) :]
        return False

    def _hermes_block(self) -> bool:
        if not self._close:  # bare JSON: the value's end ends the block
            end = self._scan.scan(self._buf)
            if end is None:
                return False
            self._block(self._buf[:end], self._buf[:end])
            self._buf, self._mode = self._buf[end:], "text"
            return True
        close = self._buf.find(self._close)
        reopen = self._buf.find(_HERMES_OPEN) if self._marker == _HERMES_OPEN else -1
        if close < 0 and reopen < 0:  # reopen: a new block before this one closed
            return False
        if close >= 0 and (reopen < 0 or close < reopen):
            body, end = self._buf[:close], close + len(self._close)
        else:
            body, end = self._buf[:reopen], reopen
        self._block(self._marker + self._buf[:end], body)
        self._buf, self._mode = self._buf[end:], "text"
        return True

    def _mistral_block(self) -> bool:
        stripped = self._buf.lstrip()
        if not stripped:
            return False
        if stripped[0] in "[{":  # [TOOL_CALLS][{...}, ...]
            end = self._scan.scan(stripped)
            if end is None:
                return False
            raw = self._buf[: len(self._buf) - len(stripped) + end]
            self._block(self._marker + raw, raw)
        else:  # [TOOL_CALLS]name[ARGS]{...}  (or name[CALL_ID]id[ARGS]{...})
            index = stripped.find(_MISTRAL_ARGS)
            head = stripped if index < 0 else stripped[:index]
            args = stripped[index + len(_MISTRAL_ARGS) :].lstrip() if index >= 0 else ""
            if re.search(r"[\s{}\"]", head) or (
                args and args[0] != "{"
            ):  # no tool call after all: the marker is text
                self._text(self._marker)
                self._mode = "text"
                return True
            end = self._scan.scan(args) if args else None
            if end is None:
                return False
            raw = self._buf[: len(self._buf) - len(args) + end]
            call = {"name": head.split(_MISTRAL_CALL_ID)[0], "arguments": args[:end]}
            self._block(self._marker + raw, json.dumps(call))
        self._buf, self._mode = self._buf[len(raw) :], "text"
        return True

    def _llama3_step(self) -> bool:
        """Llama 3: calls only if the whole output starts with ``{`` or the python tag."""
        if self._mode in ("start", "text"):  # "text": between two calls
            stripped = self._buf.lstrip(_SEPARATORS if self._mode == "text" else None)
            if stripped.startswith(_PYTHON_TAG):
                self._buf, self._mode = stripped[len(_PYTHON_TAG) :], "text"
                return True
            if not stripped or _PYTHON_TAG.startswith(stripped):
                return False
            if not stripped.startswith("{"):
                if self._mode == "text":
                    self._buf = stripped  # separators after the last call are dropped
                self._mode = "plain"
                return True
            self._open_block("", stripped)
        end = self._scan.scan(self._buf)
        if end is None:
            return False
        self._block(self._buf[:end], self._buf[:end])
        self._buf, self._mode = self._buf[end:], "text"
        return True

    # -- output

    def _block(self, raw: str, body: str | None) -> None:
        """Emit the calls of one block, or else its raw text (with the space cut before it)."""
        calls = (
            _to_calls(body, self._names, self._schemas, repair=self._repair)
            if body is not None
            else None
        )
        if calls is None:
            self._text(raw)
        else:
            self._out.extend(calls)
            self._space, self._after_call = "", True

    def _text(self, text: str) -> None:
        text, self._space = self._space + text, ""
        if self._after_call:
            text = text.lstrip()
        if not text:
            return
        self._after_call = False
        if self._out and isinstance(self._out[-1], str):
            self._out[-1] += text
        else:
            self._out.append(text)

    def _take(self) -> list[Event]:
        out, self._out = self._out, []
        return out


def parse_tool_calls(
    fmt: ToolFormat,
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


# -- grammars (llama.cpp GBNF)

_GBNF_TOKEN = re.compile(
    r"""(?P<lit>"(?:\\.|[^"\\])*")|(?P<cls>\[(?:\\.|[^\]\\])*\])|(?P<rep>\{[0-9,\s]*\})"""
    r"|(?P<comment>#[^\n]*)|(?P<name>[A-Za-z0-9_-]+)|(?P<other>.)",
    re.DOTALL,
)
_LOOSE_CHAR = r'[^"\\] | "\\" '
_STRICT_CHAR = r'[^"\\\x7F\x00-\x1F] | "\\" '


def _schema_gbnf(schema: Mapping[str, Any], prefix: str = "") -> str:
    """Convert a JSON schema (:mod:`.json_schema_grammar`), rules prefixed."""
    gbnf = schema_to_gbnf(schema)  # UnsupportedSchemaError names the keyword and where
    rules: list[list[str]] = []
    for line in gbnf.splitlines():
        head = re.match(r"([A-Za-z0-9_-]+) ::= ", line)
        if head:
            rules.append([head.group(1), line[head.end() :]])
        elif rules:
            rules[-1][1] += "\n" + line
    defined = {name for name, _ in rules}

    def rename(body: str) -> str:
        return "".join(
            prefix + m.group() if m.lastgroup == "name" and m.group() in defined else m.group()
            for m in _GBNF_TOKEN.finditer(body)
        )

    # JSON strings may not hold raw control characters: keep the output strict JSON.
    return "\n".join(
        f"{prefix}{name} ::= {rename(body.replace(_LOOSE_CHAR, _STRICT_CHAR, 1))}"
        for name, body in rules
    )


def _hoist_defs(params: Mapping[str, Any], tag: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Move ``$defs``/``definitions`` out of a tool's schema, renamed ``{tag}{name}``."""
    defs: dict[str, Any] = {}
    for key in ("$defs", "definitions"):
        for name, sub in dict(params.get(key) or {}).items():
            defs[f"{tag}{name}"] = sub

    def fix(node: Any) -> Any:
        if isinstance(node, Mapping):
            out = {k: fix(v) for k, v in node.items() if k not in ("$defs", "definitions")}
            ref = out.get("$ref")
            if isinstance(ref, str):
                for key in ("$defs", "definitions"):
                    if ref.startswith(f"#/{key}/"):
                        out["$ref"] = f"#/$defs/{tag}{ref[len(key) + 3 :]}"
            return out
        if isinstance(node, list):
            return [fix(item) for item in node]
        return node

    return fix(params), {name: fix(sub) for name, sub in defs.items()}


def tool_call_gbnf(
    fmt: ToolFormat,
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
        InvalidOptionError: If no tool (or no tool called ``name``) is given, or a
            schema cannot be turned into a grammar.
    """
    functions = [tool["function"] for tool in normalize_tools(tools)]
    if name is not None:
        functions = [fn for fn in functions if fn.get("name") == name]
    if not functions:
        wanted = f"no tool named {name!r} among the tools" if name is not None else "no tools"
        raise InvalidOptionError(f"Cannot force a tool call: {wanted} given.")
    key = "parameters" if fmt == "llama3" else "arguments"
    alternatives: list[dict[str, Any]] = []
    all_defs: dict[str, Any] = {}
    for index, fn in enumerate(functions):
        params, defs = _hoist_defs(fn["parameters"], f"t{index}-")
        all_defs.update(defs)
        alternatives.append(
            {
                "type": "object",
                "properties": {"name": {"const": fn.get("name")}, key: params},
                "required": ["name", key],
            }
        )
    schema: dict[str, Any] = alternatives[0] if len(alternatives) == 1 else {"anyOf": alternatives}
    if all_defs:
        schema = {**schema, "$defs": all_defs}
    rules = _schema_gbnf(schema, "call-")
    if fmt == "hermes":
        block = '"<tool_call>\\n" call-root "\\n</tool_call>"'
        root = f'{block} ("\\n" {block})*' if parallel else block
    elif fmt == "mistral":
        more = ' ("," " " call-root)*' if parallel else ""
        root = f'"[TOOL_CALLS][" call-root{more} "]"'
    else:
        root = 'call-root (";" " " call-root)*' if parallel else "call-root"
    return f"root ::= {root}\n{rules}\n"


def json_schema_gbnf(schema: Mapping[str, Any] | None) -> str:
    """Build a grammar for structured output.

    Args:
        schema: A JSON schema the output must match; ``None`` means any JSON object.

    Returns:
        A GBNF grammar (root rule ``root``).

    Raises:
        InvalidOptionError: If the schema cannot be turned into a grammar.
    """
    if schema is None:
        from llama_cpp.llama_grammar import JSON_GBNF

        return str(JSON_GBNF)
    return _schema_gbnf(schema) + "\n"
