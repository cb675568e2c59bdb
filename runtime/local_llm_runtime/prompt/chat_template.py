r"""Render a model's own chat template (``tokenizer.chat_template``) safely.

A GGUF file carries its chat template as Jinja source, written by whoever made
the file: it is untrusted code. :class:`ChatTemplate` compiles it once in Jinja's
immutable sandbox, configured like Hugging Face ``transformers`` (``trim_blocks``,
``lstrip_blocks``, ``loopcontrols``, a ``{% generation %}`` tag, ``tojson`` that
keeps non-ASCII, ``raise_exception``, ``strftime_now``), and turns every failure --
a syntax error (at construction), an unsafe attribute such as ``__class__``, an
``include``/``import`` (there is no loader: no file is ever read), an oversized
repetition or any other exception while rendering -- into
:class:`~local_llm_runtime.errors.TemplateError`.

Messages are OpenAI-style dicts; tool-call arguments given as JSON strings are
decoded first, since templates write ``tool_call.arguments | tojson``. A model
without a template gets ChatML, with tools described Hermes-style.
"""

from __future__ import annotations

import contextvars
import copy
import functools
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from functools import cached_property
from typing import Any, cast

from jinja2 import Template, nodes
from jinja2.exceptions import SecurityError
from jinja2.ext import Extension, loopcontrols
from jinja2.filters import FILTERS
from jinja2.parser import Parser
from jinja2.runtime import Context, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment, safe_range
from jinja2.visitor import NodeTransformer

from local_llm_runtime.errors import TemplateError
from local_llm_runtime.prompt.families import traits_for
from local_llm_runtime.prompt.tool_syntaxes import (
    ToolCall,
    ToolSyntax,
    syntax_for,
    warn_unknown_syntax,
)

__all__ = ["CHATML_TEMPLATE", "ChatTemplate"]

CHATML_TEMPLATE = r"""
{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages and messages[0].role == 'system' %}
        {{- messages[0].content + '\n\n' }}
    {%- endif %}
    {{- '# Tools\n\nYou may call one or more functions to assist with the user query. ' }}
    {{- 'The functions, as a JSON list:\n<tools>\n' + tools | tojson + '\n</tools>\n\n' }}
    {{- 'To call functions, answer with one block per call:\n' }}
    {{- '<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>' }}
    {{- '<|im_end|>\n' }}
{%- endif %}
{%- for message in messages %}
    {%- if message.role == 'system' and loop.first and tools %}
    {%- elif message.role == 'assistant' and message.tool_calls %}
        {{- '<|im_start|>assistant\n' }}
        {%- if message.content %}
            {{- message.content + '\n' }}
        {%- endif %}
        {%- for call in message.tool_calls %}
            {%- set call = {'name': call.function.name, 'arguments': call.function.arguments} %}
            {{- '<tool_call>\n' + call | tojson + '\n</tool_call>' }}
            {{- '\n' if not loop.last }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == 'tool' %}
        {{- '<|im_start|>tool\n<tool_response>\n' + message.content }}
        {{- '\n</tool_response><|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"""
"""The template used when a model has none: ChatML, tools in the system message."""

_MAX_REPEAT = 1_000_000
"""Longest string or list a template may build with ``*``; largest integer argument to a call."""
_MAX_EXPONENT = 4096
_MAX_INT_BITS = 1 << 16
"""Largest integer (in bits) a template may compute with ``**`` or ``*``."""
_MAX_STEPS = 250_000
"""Loop iterations, ``range`` items, calls and filter applications one render may take,
beyond :data:`_STEPS_PER_VALUE` for each value of its input."""
_STEPS_PER_VALUE = 64
_MAX_CALL_DEPTH = 64
"""Calls (macros, recursive ``loop``) one render may have open at once: about seven Python
frames each, so a hostile recursion stops as a :class:`TemplateError` long before Python's own
limit, whose ``RecursionError`` can also surface in unrelated finalizers."""
_MAX_OUTPUT = 1 << 22
"""Characters a render may produce (or any string or list it builds hold), beyond
four times the characters of its input (messages and tools)."""
_WIDE_FORMAT = re.compile(r"%[-#0 +]*(?:\*|\d{7,})|\{[^{}]*:[^{}]*\d{7,}[^{}]*\}")
"""A printf or ``str.format`` field ``width`` of a million characters or more (or ``*``)."""


class _Budget:
    """The work one render may still do (see :data:`_MAX_STEPS`, :data:`_MAX_OUTPUT`)."""

    def __init__(self, max_chars: int = _MAX_OUTPUT, max_steps: int = _MAX_STEPS) -> None:
        self.steps = self.max_steps = max_steps
        self.max_chars = max_chars
        self.depth = 0

    def step(self, n: int = 1) -> None:
        self.steps -= n
        if self.steps < 0:
            raise TemplateError(
                f"The chat template does too much work: over {self.max_steps:,} loop iterations "
                "and calls for one prompt (a hostile or broken template). Use another model "
                "file or give the model a template of your own."
            )

    def limit(self, items: int) -> None:
        """Refuse a string or list of ``items`` (built or about to be)."""
        if items > self.max_chars:
            raise TemplateError(
                f"The chat template builds a value of {items:,} items, more than the "
                f"{self.max_chars:,} a prompt from these messages can need (a hostile or "
                "broken template)."
            )

    def size(self, value: Any) -> Any:
        """Refuse a string or list longer than a render may produce; return ``value``."""
        if isinstance(value, str | list | tuple):
            self.limit(len(value))
        elif (
            isinstance(value, int)
            and not isinstance(value, bool)
            and value.bit_length() > _MAX_INT_BITS
        ):
            raise TemplateError("The chat template computes an integer that is too large.")
        return value


_BUDGET: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar(
    "local_llm_template_budget", default=None
)


def _budget() -> _Budget:
    budget = _BUDGET.get()
    return _Budget() if budget is None else budget  # outside ChatTemplate.render: per call


def _check_arguments(args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
    """Refuse integer arguments that ask for huge output (``center(10**9)``)."""
    for value in (*args, *kwargs.values()):
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > _MAX_REPEAT:
            raise TemplateError(
                f"The chat template passes {value} to a function: too large (a hostile or "
                "broken template)."
            )


def _check_string_method(name: str, text: str, args: Sequence[Any], budget: _Budget) -> None:
    """Estimate the output of ``str`` methods that grow text before they run."""
    if name in ("format", "format_map") and _WIDE_FORMAT.search(text):
        raise TemplateError("The chat template formats a field a million characters wide.")
    if name == "replace" and len(args) >= 2 and isinstance(args[0], str):
        old, new = args[0], str(args[1])
        grows = (len(new) - len(old)) * (text.count(old) if old else len(text) + 1)
        budget.limit(len(text) + max(grows, 0))
    if name == "join" and len(args) == 1 and isinstance(args[0], list | tuple):
        budget.limit(len(text) * len(args[0]))


def _loop_guard(iterable: Any) -> Iterator[Any]:
    """What ``{% for %}`` iterates (inserted by :meth:`_Sandbox._parse`): counts each item."""
    budget = _budget()
    for item in iterable:
        budget.step()
        yield item


def _concat_guard(*parts: Any) -> str:
    """``a ~ b`` (inserted by :meth:`_Sandbox._parse`) with a size check before joining."""
    texts = [str(part) for part in parts]
    _budget().limit(sum(len(t) for t in texts))
    return "".join(texts)


def _counted_range(*args: int) -> range:
    """``range`` charged by its length, so nested loops over ranges stay bounded."""
    items = safe_range(*args)
    _budget().step(len(items))
    return items


def _guard_filter(function: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(function)  # keeps jinja_pass_arg (pass_environment, ...)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        budget = _budget()
        budget.step()
        _check_arguments(args, kwargs)
        if function is _FILTER_JOIN and len(args) >= 2:
            value, sep = args[1], args[2] if len(args) > 2 else kwargs.get("d", "")
            if isinstance(value, list | tuple) and isinstance(sep, str):
                budget.limit(len(sep) * len(value))
        if function is _FILTER_REPLACE and len(args) >= 4 and isinstance(args[1], str):
            _check_string_method("replace", args[1], args[2:4], budget)
        if function is _FILTER_FORMAT and args and isinstance(args[0], str):
            _check_string_method("format", args[0], (), budget)
        return budget.size(function(*args, **kwargs))

    return guarded


class _GenerationTag(Extension):
    """``{% generation %}...{% endgeneration %}`` (transformers): renders its body."""

    tags = {"generation"}  # noqa: RUF012 - the Extension API's own class attribute

    def parse(self, parser: Parser) -> list[nodes.Node]:
        next(parser.stream)
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


class _Guards(NodeTransformer):
    """Route loop iterables and ``~`` through the render budget."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = nodes.Call(
            nodes.Name("__local_llm_loop", "load"), [node.iter], [], None, None
        ).set_lineno(node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return nodes.Call(
            nodes.Name("__local_llm_concat", "load"), list(node.nodes), [], None, None
        ).set_lineno(node.lineno)


class _Sandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, stricter: unsafe attributes fail at once, work and sizes are bounded.

    Every render has a budget (:class:`_Budget`): loop iterations, ``range``
    items, calls and filters count against :data:`_MAX_STEPS`; every string or
    list built by ``+``, ``~``, ``*``, ``%``, a call or a filter, and the output
    itself, against a size limit; integer arguments, format widths and
    ``replace``/``join`` results are checked before they are computed.
    """

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        guarded = _Guards().visit(tree)
        guarded.set_environment(self)
        return cast(nodes.Template, guarded)

    def unsafe_undefined(self, obj: Any, attribute: str) -> Undefined:
        raise SecurityError(f"access to attribute {attribute!r} of a template value is unsafe")

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        budget = _budget()
        if operator == "**" and isinstance(right, int) and abs(right) > _MAX_EXPONENT:
            raise SecurityError(f"exponent {right} is too large")
        if (
            operator == "**"
            and isinstance(left, int)
            and isinstance(right, int)
            and left.bit_length() * right > _MAX_INT_BITS
        ):
            raise TemplateError("The chat template computes an integer that is too large.")
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                sized = isinstance(seq, str | list | tuple) and isinstance(times, int)
                if sized and len(seq) * times > _MAX_REPEAT:
                    raise SecurityError("repetition too long")
        if operator == "%" and isinstance(left, str) and _WIDE_FORMAT.search(left):
            raise TemplateError("The chat template formats a field a million characters wide.")
        return budget.size(super().call_binop(context, operator, left, right))

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        budget = _budget()
        budget.step()
        if __obj is not _loop_guard and __obj is not _concat_guard:
            _check_arguments(args, kwargs)
        target = getattr(__obj, "__wrapped__", __obj)
        bound = getattr(target, "__self__", None)
        if isinstance(bound, str):
            _check_string_method(getattr(target, "__name__", ""), bound, args, budget)
        if budget.depth >= _MAX_CALL_DEPTH:
            raise TemplateError(
                f"The chat template nests calls more than {_MAX_CALL_DEPTH} deep (a hostile or "
                "broken template). Use another model file or give the model a template of your own."
            )
        budget.depth += 1
        try:
            return budget.size(super().call(__context, __obj, *args, **kwargs))
        finally:
            budget.depth -= 1


_FILTER_JOIN = FILTERS["join"]
_FILTER_REPLACE = FILTERS["replace"]
_FILTER_FORMAT = FILTERS["format"]


def _raise_exception(message: str) -> None:
    raise TemplateError(f"The chat template refused these messages: {message}")


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | str | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _environment() -> _Sandbox:
    env = _Sandbox(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[loopcontrols, _GenerationTag],
        autoescape=False,
    )
    env.filters["tojson"] = _tojson
    env.filters = {name: _guard_filter(f) for name, f in env.filters.items()}
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.globals["range"] = _counted_range
    env.globals["__local_llm_loop"] = _loop_guard
    env.globals["__local_llm_concat"] = _concat_guard
    return env


_ENV = _environment()


def _input_size(value: Any) -> tuple[int, int]:
    """Characters of all the strings in ``value``, and how many values it holds."""
    if isinstance(value, str):
        return len(value), 1
    if isinstance(value, Mapping):
        pairs = [_input_size(k) for k in value] + [_input_size(v) for v in value.values()]
    elif isinstance(value, list | tuple):
        pairs = [_input_size(v) for v in value]
    else:
        return 0, 1
    return sum(c for c, _ in pairs), 1 + sum(n for _, n in pairs)


def _content(content: Any) -> str:
    """Message content as text: ``None`` is empty, text parts of a list are joined."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part if isinstance(part, str) else str(part.get("text", ""))
            for part in content
            if isinstance(part, str) or (isinstance(part, Mapping) and part.get("type") == "text")
        )
    return json.dumps(content, ensure_ascii=False)


def _arguments(arguments: Any) -> Any:
    """Decode arguments given as a JSON string; keep the string if it is not an object."""
    if arguments is None or (isinstance(arguments, str) and not arguments.strip()):
        return {}
    if isinstance(arguments, str):
        try:
            decoded = json.loads(arguments)
        except ValueError:
            return arguments
        return decoded if isinstance(decoded, dict) else arguments
    return dict(arguments) if isinstance(arguments, Mapping) else arguments


def _tool_call(call: Mapping[str, Any] | ToolCall) -> dict[str, Any]:
    if isinstance(call, ToolCall):
        call = {"id": call.id, "function": {"name": call.name, "arguments": call.arguments}}
    function = call.get("function")
    function = function if isinstance(function, Mapping) else call
    out: dict[str, Any] = {
        "type": "function",
        "function": {
            "name": function.get("name"),
            "arguments": _arguments(function.get("arguments")),
        },
    }
    if call.get("id") is not None:
        out = {"id": call["id"], **out}
    return out


def _message(message: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(message)
    out["content"] = _content(message.get("content"))
    calls = out.pop("tool_calls", None)
    if calls:  # empty or None: absent, as templates test "tool_calls in message"
        out["tool_calls"] = [_tool_call(call) for call in calls]
    return out


class ChatTemplate:
    r"""A model's chat template, compiled once in a sandbox.

    Example:
        >>> template = ChatTemplate(None)  # ChatML fallback
        >>> template.render([{"role": "user", "content": "Hi"}])
        '<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n'
    """

    def __init__(
        self,
        source: str | None,
        *,
        bos_token: str = "",
        eos_token: str = "",
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        """Compile a chat template.

        Args:
            source: The Jinja template (GGUF ``tokenizer.chat_template``); ``None``
                or empty selects ChatML (:data:`CHATML_TEMPLATE`).
            bos_token: Text of the model's begin-of-sequence token (``bos_token``).
            eos_token: Text of its end-of-sequence token (``eos_token``).
            metadata: The model's GGUF metadata (``general.architecture``,
                ``general.name``), for its family traits (:mod:`.families`), its
                tool-call syntax (:mod:`.tool_syntaxes`) and warnings; default none.

        Raises:
            TemplateError: If the template does not compile (a syntax error is
                reported here, not at the first render).
        """
        if source is not None and not isinstance(source, str):
            raise TemplateError(f"A chat template must be a string, not {type(source).__name__}.")
        self._source = source or None
        self._text = self._source or CHATML_TEMPLATE
        self._bos = bos_token
        self._eos = eos_token
        self._metadata: dict[str, Any] = dict(metadata or {})
        self._protect: Callable[[Any], Any] | None = None
        try:
            self._template: Template = _ENV.from_string(self._text)
        except Exception as exc:
            raise TemplateError(f"The chat template does not compile: {exc}") from exc

    def protecting(self, protect: Callable[[Any], Any]) -> ChatTemplate:
        """This template, rendering every caller-supplied value through ``protect`` first.

        ``protect`` gets each message (after content and tool-call arguments are
        normalised) and each tool, and returns them with their text made safe
        (see :meth:`local_llm_runtime.prompt.prompt_tokens.PromptTokenizer.protect_value`).
        The template's own markup, ``bos_token`` and ``eos_token`` are untouched.
        """
        view = copy.copy(self)
        view._protect = protect
        return view

    @property
    def source(self) -> str | None:
        """The template source as given, ``None`` when the ChatML fallback is used."""
        return self._source

    @property
    def bos_token(self) -> str:
        """Text of the begin-of-sequence token given to the template (may be empty)."""
        return self._bos

    @property
    def eos_token(self) -> str:
        """Text of the end-of-sequence token given to the template (may be empty)."""
        return self._eos

    @property
    def supports_tools(self) -> bool:
        """Whether the template renders tools (it mentions ``tools``; ChatML does)."""
        return "tools" in self._text

    @cached_property
    def tool_syntax(self) -> ToolSyntax:
        """The syntax the model writes tool calls in (:mod:`.tool_syntaxes`; Hermes by default)."""
        return syntax_for(self._source, self._metadata)

    @property
    def tool_format(self) -> str:
        """The name of :attr:`tool_syntax` (``hermes``, ``mistral``, ``llama3``...)."""
        return self.tool_syntax.name

    @cached_property
    def think_tags(self) -> tuple[str, str] | None:
        """``(open, close)`` of the model's reasoning block, from its family (:mod:`.families`)."""
        return traits_for(self._metadata, template=self._text).think_tags

    @property
    def thinks(self) -> bool:
        """Whether the model writes reasoning blocks (its family has think tags)."""
        return self.think_tags is not None

    @cached_property
    def opens_thinking(self) -> bool:
        """Whether the generation prompt itself opens the reasoning block (DeepSeek-R1 style).

        Then the model's output starts inside the reasoning block.
        """
        if self.think_tags is None:
            return False
        try:
            prompt = self.render([{"role": "user", "content": "Hi"}], add_generation_prompt=True)
        except TemplateError:
            return False
        return prompt.rstrip().endswith(self.think_tags[0])

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        add_generation_prompt: bool = True,
        **extra: Any,
    ) -> str:
        """Render a conversation into the prompt text.

        Args:
            messages: OpenAI-style messages: ``role`` (``system``/``user``/
                ``assistant``/``tool``), ``content`` (text or ``None``), and where
                relevant ``tool_calls`` (``[{"id", "type": "function", "function":
                {"name", "arguments"}}]``, arguments a dict or a JSON string),
                ``tool_call_id`` and ``name``.
            tools: OpenAI-style tools; given to the template only when not empty.
            add_generation_prompt: End with the opening of the assistant's turn.
            **extra: More template variables (``enable_thinking``, ``date_string``, ...).

        Returns:
            The prompt text, special tokens written as text.

        Raises:
            TemplateError: If the template refuses the messages (``raise_exception``),
                tries something unsafe, or fails in any other way.
        """
        context: dict[str, Any] = {"bos_token": self._bos, "eos_token": self._eos, **extra}
        context["messages"] = [_message(message) for message in messages]
        syntax = self.tool_syntax
        context["messages"] = [syntax.prepare_message(m) for m in context["messages"]]
        if tools:
            warn_unknown_syntax(self._source, self._metadata)
        context["add_generation_prompt"] = add_generation_prompt
        if tools:
            context["tools"] = [dict(tool) for tool in tools]
        if self._protect is not None:
            context["messages"] = [self._protect(m) for m in context["messages"]]
            if tools:
                context["tools"] = [self._protect(t) for t in context["tools"]]
        chars, values = _input_size(context)
        budget = _Budget(_MAX_OUTPUT + 4 * chars, _MAX_STEPS + _STEPS_PER_VALUE * values)
        token = _BUDGET.set(budget)
        try:
            parts: list[str] = []
            produced = 0
            for part in self._template.generate(context):
                produced += len(part)
                if produced > budget.max_chars:
                    budget.limit(produced)
                parts.append(part)
            return "".join(parts)
        except TemplateError:
            raise
        except RecursionError:
            raise TemplateError(
                "The chat template recurses too deeply (a hostile or broken template)."
            ) from None
        except Exception as exc:
            raise TemplateError(f"The chat template failed to render: {exc}") from exc
        finally:
            _BUDGET.reset(token)
