r'''Ollama Modelfiles: read them (``local-llm create -f``) and write them (``show --modelfile``).

The syntax is Ollama's (``parser/parser.go``): one instruction per line, the keyword
case-insensitive, then its value::

    # a comment: a line that starts with # (a # later in a line is text)
    # FROM: a name, a .gguf path or hf.co/org/repo:QUANT
    FROM qwen2.5:7b
    PARAMETER temperature 0.7
    # repeatable: the stop sequences accumulate
    PARAMETER stop "<|im_end|>"
    SYSTEM """You are Mario.
    Answer as Mario."""
    # Jinja (Hugging Face chat-template syntax), not Ollama's Go templates
    TEMPLATE """{% for m in messages %}..."""
    MESSAGE user Is Toronto in Canada?
    MESSAGE assistant yes
    ADAPTER ./lora.gguf
    LICENSE """MIT ..."""

A value runs to the end of its line; ``"..."`` and ``"""..."""`` quote it (a quoted value
goes on over newlines until a line ends where the quotes close). Quotes have no escapes: a
value is taken verbatim between its quotes, exactly as Ollama reads it. Beyond Ollama,
``'...'`` (one line) and triple single quotes quote too, so that :func:`render_modelfile` can
write every value (one holding both ``"\n`` and ``"""\n`` has no Ollama spelling).

Everything here but :func:`read_modelfile` is pure: no file is read, no model resolved (see
:meth:`~local_llm_runtime.store.library.ModelLibrary.create_from_modelfile`).
'''

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from local_llm_runtime.errors import InvalidOptionError, ModelfileError, TemplateError
from local_llm_runtime.options import option_table, parse_params

__all__ = [
    "JINJA_CHATML_EXAMPLE",
    "MESSAGE_ROLES",
    "Modelfile",
    "check_template",
    "modelfile_of",
    "parse_modelfile",
    "read_modelfile",
    "render_modelfile",
]

logger = logging.getLogger(__name__)

MESSAGE_ROLES = ("system", "user", "assistant")
"""The roles a ``MESSAGE`` line may have (as Ollama)."""

_INSTRUCTIONS = ("from", "parameter", "system", "template", "message", "adapter", "license")
_OLLAMA_ONLY = {
    "draft": "speculative decoding with a draft model",
    "renderer": "Ollama's built-in prompt renderers",
    "parser": "Ollama's built-in output parsers",
    "requires": "an Ollama version requirement",
}
"""Instructions Ollama knows that this runtime does not implement (a clear error, not 'unknown')."""

_IGNORED_PARAMETERS = frozenset(
    {
        # Ollama's deprecated parameters (it warns and ignores them too).
        "penalize_newline",
        "low_vram",
        "f16_kv",
        "logits_all",
        "vocab_only",
        "use_mlock",
        "mirostat",
        "mirostat_tau",
        "mirostat_eta",
        # Load hints that change no answer.
        "num_keep",
        "numa",
        "main_gpu",
        "use_mmap",
    }
)
"""``PARAMETER`` names found in Ollama Modelfiles that are accepted with a warning and unused."""

_USAGE = {
    "from": "FROM <model name, .gguf path or hf.co/org/repo:QUANT>",
    "parameter": "PARAMETER <name> <value>, e.g. PARAMETER temperature 0.7",
    "system": 'SYSTEM """<system prompt>"""',
    "template": 'TEMPLATE """<Jinja chat template>"""',
    "message": "MESSAGE <system|user|assistant> <text>",
    "adapter": "ADAPTER <path to a LoRA adapter .gguf>",
    "license": 'LICENSE """<license text>"""',
}

JINJA_CHATML_EXAMPLE = (
    "{% for m in messages %}{{ '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
"""A minimal ChatML chat template in Jinja (the syntax ``TEMPLATE`` takes), on one line."""

_GO_TEMPLATE = re.compile(
    r"\{\{-?\s*(?:\.[A-Za-z_]|\$|(?:if|range|with|else|block|define|template)\s"
    r"|(?:else|end)\s*-?\}\})"
)
"""Go ``text/template`` actions: ``{{ .Prompt }}``, ``{{ if .System }}``, ``{{- range ... }}``,
``{{ end }}``, ``{{ $var }}`` (none of them is valid Jinja)."""

_SAMPLE_USER = "Is Toronto in Canada? (sample question)"
_SAMPLE = (
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Hello!"},
    {"role": "assistant", "content": "Hi! How can I help?"},
    {"role": "user", "content": _SAMPLE_USER},
)


@dataclass(frozen=True)
class Modelfile:
    """A parsed Modelfile: what ``create`` binds to the new name.

    Attributes:
        from_: The ``FROM`` reference as written (a name, a ``.gguf`` path, ``hf.co/...``).
        parameters: ``PARAMETER`` values, typed and checked like every option
            (:func:`~local_llm_runtime.options.validate_options`); ``stop`` is a list.
        system: ``SYSTEM`` (the last one wins), or ``None``.
        template: ``TEMPLATE``: a Jinja chat template, or ``None``.
        messages: ``MESSAGE`` lines in order, as ``{"role", "content"}``.
        adapters: ``ADAPTER`` paths as written (relative ones are relative to the
            Modelfile's folder: see :meth:`resolved`).
        license: ``LICENSE`` text (several are joined by a blank line), or ``None``.
    """

    from_: str
    parameters: dict[str, Any] = field(default_factory=dict)
    system: str | None = None
    template: str | None = None
    messages: tuple[dict[str, str], ...] = ()
    adapters: tuple[str, ...] = ()
    license: str | None = None

    def resolved(self, base_dir: str | Path) -> Modelfile:
        """This Modelfile with relative ``FROM``/``ADAPTER`` paths made relative to ``base_dir``.

        A ``FROM`` that is a name (not a path) is kept; ``~`` is expanded. No I/O.

        Args:
            base_dir: The folder of the Modelfile.
        """
        from local_llm_runtime.store.names import FileRef, parse_ref

        base = Path(base_dir).expanduser()
        source = self.from_
        ref = parse_ref(source)
        if isinstance(ref, FileRef):
            source = str(_against(base, source))
        return replace(
            self, from_=source, adapters=tuple(str(_against(base, a)) for a in self.adapters)
        )

    def create_arguments(self) -> dict[str, Any]:
        """The keyword arguments of :meth:`ModelLibrary.create` (``source`` included).

        What the Modelfile leaves out is ``None`` (inherited from ``FROM``).
        """
        return {
            "source": self.from_,
            "system": self.system,
            "parameters": dict(self.parameters),
            "template": self.template,
            "messages": [dict(m) for m in self.messages] if self.messages else None,
            "adapters": list(self.adapters) if self.adapters else None,
            "license": self.license,
        }


def _against(base: Path, path: str) -> Path:
    expanded = Path(path).expanduser()
    return expanded if expanded.is_absolute() else base / expanded


# ---- parsing -------------------------------------------------------------------------------

_NEWLINES = "\r\n"
_BLANKS = " \t"
_LINE_END = re.compile(r"[\r\n]")


def _unquote(text: str) -> str | None:
    """The value a (stripped) buffer stands for, or ``None`` while its quotes are open."""
    for quote in ('"""', "'''"):
        if text.startswith(quote):
            return text[3:-3] if len(text) >= 6 and text.endswith(quote) else None
    if text.startswith('"'):
        return text[1:-1] if len(text) >= 2 and text.endswith('"') else None
    if len(text) >= 2 and text[0] == "'" and text[-1] == "'":
        return text[1:-1]
    return text  # bare (a lone leading ' stays literal, as in Ollama)


class _Reader:
    """A cursor over the Modelfile text that counts lines."""

    def __init__(self, text: str) -> None:
        self.text = text.removeprefix("\ufeff")
        self.pos = 0
        self.line = 1

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def advance(self) -> str:
        char = self.text[self.pos]
        self.pos += 1
        if char == "\n" or (char == "\r" and self.peek() != "\n"):
            self.line += 1
        return char

    def skip_blanks(self) -> None:
        while self.peek() and self.peek() in _BLANKS:
            self.advance()

    def word(self) -> str:
        """Characters up to a blank, a newline or the end."""
        start = self.pos
        while self.peek() and self.peek() not in _BLANKS + _NEWLINES:
            self.advance()
        return self.text[start : self.pos]

    def skip_line(self) -> None:
        """To the end of this line (no line break inside it: the line count stays)."""
        found = _LINE_END.search(self.text, self.pos)
        self.pos = found.start() if found else len(self.text)

    def value(self, keyword: str, start_line: int) -> str:
        """The value from here: to the end of the line where its quotes (if any) close.

        Linear in the value's length: a further line of a quoted value is only checked for
        the closing quote at its end. The value is what :func:`_unquote` makes of the whole
        stripped buffer, which is closed exactly when such a line ends it.
        """
        self.skip_blanks()
        start = self.pos
        self.skip_line()
        first = self.text[start : self.pos]
        value = _unquote(first.strip())
        if value is not None:
            return value
        stripped = first.strip()
        quote = next(q for q in ('"""', "'''", '"') if stripped.startswith(q))
        opening = start + len(first) - len(first.lstrip()) + len(quote)
        while not self.at_end():
            self.advance()  # the line break is part of the quoted value
            line_start = self.pos
            self.skip_line()
            line = self.text[line_start : self.pos].rstrip()
            if line.endswith(quote):
                return self.text[opening : line_start + len(line) - len(quote)]
        raise ModelfileError(
            f"the quoted value of {keyword.upper()} is never closed: end it with "
            f"{quote} at the end of a line (quotes have no escapes).",
            line=start_line,
        )


def _unknown(keyword: str, line: int) -> ModelfileError:
    lowered = keyword.lower()
    if lowered in _OLLAMA_ONLY:
        return ModelfileError(
            f"{keyword.upper()} ({_OLLAMA_ONLY[lowered]}) is not supported by local-llm; "
            "remove the line.",
            line=line,
        )
    return ModelfileError(
        f"unknown instruction {keyword!r}: use one of "
        f"{', '.join(k.upper() for k in _INSTRUCTIONS)} (a comment starts with #).",
        line=line,
    )


class _Builder:
    """The Modelfile being assembled, instruction by instruction."""

    def __init__(self) -> None:
        self.from_: str | None = None
        self.parameters: dict[str, Any] = {}
        self.system: str | None = None
        self.template: str | None = None
        self.messages: list[dict[str, str]] = []
        self.adapters: list[str] = []
        self.licenses: list[str] = []

    def add(self, keyword: str, reader: _Reader, line: int) -> None:
        if keyword == "parameter":
            self._parameter(reader, line)
            return
        if keyword == "message":
            self._message(reader, line)
            return
        value = reader.value(keyword, line)
        if keyword == "from":
            if self.from_ is not None:
                raise ModelfileError(
                    "a second FROM: a Modelfile has one FROM (the model to start from).", line=line
                )
            if not value.strip():
                raise ModelfileError(f"FROM needs a model: {_USAGE['from']}.", line=line)
            self.from_ = value.strip()
        elif keyword == "system":
            self.system = value
        elif keyword == "template":
            try:
                check_template(value)
            except TemplateError as exc:
                raise ModelfileError(str(exc), line=line) from None
            self.template = value
        elif keyword == "adapter":
            if not value.strip():
                raise ModelfileError(f"ADAPTER needs a path: {_USAGE['adapter']}.", line=line)
            self.adapters.append(value.strip())
        else:  # license
            self.licenses.append(value)

    def _name(self, reader: _Reader, keyword: str, line: int) -> str:
        reader.skip_blanks()
        name = reader.word()
        if not name or reader.at_end() or reader.peek() in _NEWLINES:
            raise ModelfileError(
                f"{keyword.upper()} needs {'a name' if keyword == 'parameter' else 'a role'} "
                f"and a value: {_USAGE[keyword]}.",
                line=line,
            )
        return name

    def _parameter(self, reader: _Reader, line: int) -> None:
        key = self._name(reader, "parameter", line)
        value = reader.value("parameter", line)
        if key in _IGNORED_PARAMETERS:
            logger.warning("Modelfile line %d: parameter %s is ignored by local-llm", line, key)
            return
        if not re.fullmatch(r"[A-Za-z0-9_]+", key):
            raise ModelfileError(
                f"{key!r} is not a parameter name: {_USAGE['parameter']}.", line=line
            )
        try:
            parsed = parse_params([f"{key}={value}"])
        except InvalidOptionError as exc:
            raise ModelfileError(f"PARAMETER {key}: {exc}", line=line) from None
        if option_table()[key].repeated:
            self.parameters.setdefault(key, []).extend(parsed[key])
        else:
            self.parameters[key] = parsed[key]

    def _message(self, reader: _Reader, line: int) -> None:
        role = self._name(reader, "message", line)
        if role.lower() not in MESSAGE_ROLES:
            raise ModelfileError(
                f"MESSAGE role {role!r} is not one of {', '.join(MESSAGE_ROLES)}: "
                f"{_USAGE['message']}.",
                line=line,
            )
        content = reader.value("message", line)
        self.messages.append({"role": role.lower(), "content": content})

    def build(self) -> Modelfile:
        if self.from_ is None:
            raise ModelfileError(f"the Modelfile has no FROM line; start it with {_USAGE['from']}.")
        return Modelfile(
            from_=self.from_,
            parameters=self.parameters,
            system=self.system,
            template=self.template,
            messages=tuple(self.messages),
            adapters=tuple(self.adapters),
            license="\n\n".join(self.licenses) if self.licenses else None,
        )


def _windows_newlines(text: str) -> str:
    r"""``text`` with its line breaks as ``\n`` when every one of them is ``\r\n``.

    A file saved on Windows is read the same by ``create -f``, ``rt.create(modelfile=...)``
    and ``/api/create`` (no ``\r`` left in a multi-line SYSTEM or TEMPLATE). A Modelfile
    with any bare ``\n`` (as :func:`render_modelfile` writes) is taken verbatim, so a value
    holding ``\r\n`` still reads back exactly.
    """
    crlf = text.count("\r\n")
    if crlf and crlf == text.count("\n"):
        return text.replace("\r\n", "\n")
    return text


def parse_modelfile(text: str) -> Modelfile:
    """Parse a Modelfile (Ollama's syntax).

    Args:
        text: The Modelfile's content.

    Returns:
        The parsed Modelfile (paths as written; see :meth:`Modelfile.resolved`).

    Raises:
        ModelfileError: An unknown instruction, a malformed line, an unclosed quote, a bad
            ``PARAMETER`` (unknown name or value out of range), a ``MESSAGE`` role other
            than system/user/assistant, a ``TEMPLATE`` in Go syntax or that does not work,
            or no ``FROM``. The message names the line.
    """
    if not isinstance(text, str):
        raise ModelfileError(f"A Modelfile must be text, not {type(text).__name__}.")
    reader = _Reader(_windows_newlines(text))
    builder = _Builder()
    while True:
        while reader.peek() and reader.peek() in _BLANKS + _NEWLINES:
            reader.advance()
        if reader.at_end():
            return builder.build()
        line = reader.line
        if reader.peek() == "#":
            reader.skip_line()
            continue
        keyword = reader.word()
        lowered = keyword.lower()
        if lowered not in _INSTRUCTIONS:
            raise _unknown(keyword, line)
        if reader.at_end() or reader.peek() in _NEWLINES:
            raise ModelfileError(f"{keyword.upper()} needs a value: {_USAGE[lowered]}.", line=line)
        builder.add(lowered, reader, line)


def read_modelfile(path: str | Path) -> Modelfile:
    """Read and parse a Modelfile, its relative paths made relative to its folder.

    Args:
        path: The Modelfile (UTF-8, a BOM is allowed).

    Returns:
        The parsed Modelfile (see :meth:`Modelfile.resolved`).

    Raises:
        ModelfileError: The file cannot be read or is not a valid Modelfile.
    """
    file = Path(path).expanduser()
    try:
        with file.open(encoding="utf-8", newline="") as handle:  # as the API: see parse
            text = handle.read()
    except UnicodeDecodeError:
        raise ModelfileError(f"{file} is not UTF-8 text; save the Modelfile as UTF-8.") from None
    except OSError as exc:
        raise ModelfileError(f"Cannot read the Modelfile {file}: {exc.strerror or exc}.") from None
    return parse_modelfile(text).resolved(file.parent)


# ---- templates -----------------------------------------------------------------------------


def check_template(source: str) -> None:
    """Check a ``TEMPLATE``: Jinja that compiles in the sandbox and renders a conversation.

    Args:
        source: The template text.

    Raises:
        TemplateError: It is empty, in Ollama's Go template syntax (the message shows
            the Jinja form), does not compile, fails on a sample conversation (system,
            user, assistant, user) or never writes the messages' text.
    """
    from local_llm_runtime.prompt.chat_template import ChatTemplate

    if not source.strip():
        raise TemplateError("TEMPLATE is empty; remove it to keep the model's own chat template.")
    if _GO_TEMPLATE.search(source):
        raise TemplateError(
            "TEMPLATE is in Ollama's Go template syntax ({{ .Prompt }}, {{ .System }}, "
            "{{ range .Messages }}...{{ end }}); local-llm templates are Jinja, as in Hugging "
            "Face chat templates: loop over messages (role, content) and end with the "
            "assistant's turn when add_generation_prompt is set, e.g. ChatML: "
            + JINJA_CHATML_EXAMPLE
            + " (or remove TEMPLATE to keep the GGUF's own)."
        )
    template = ChatTemplate(source)  # TemplateError on a syntax error
    try:
        prompt = template.render(_SAMPLE, add_generation_prompt=True)
    except TemplateError as exc:
        try:  # some templates refuse a system message: one without is fine too
            prompt = template.render(_SAMPLE[1:], add_generation_prompt=True)
        except TemplateError:
            raise TemplateError(
                f"TEMPLATE fails on a sample conversation (system, user, assistant, user): {exc}"
            ) from None
    if _SAMPLE_USER not in prompt:
        raise TemplateError(
            "TEMPLATE never writes the messages' text (a sample conversation rendered "
            "without its last user message); loop over messages and write each "
            "message.content, e.g. " + JINJA_CHATML_EXAMPLE
        )


# ---- writing -------------------------------------------------------------------------------

_Style = Literal["bare", "quoted", "block"]
_FORMS: dict[_Style, tuple[str, ...]] = {
    # Delimiters tried in order; "" is bare. Every candidate is checked by reading it back.
    "bare": ("", '"', '"""', "'", "'''"),
    "quoted": ('"', '"""', "", "'", "'''"),
    "block": ('"""', '"', "", "'''", "'"),
}


def _reads_back(spelled: str, value: str) -> bool:
    reader = _Reader(spelled + "\n")
    try:
        got = reader.value("value", 1)
    except ModelfileError:
        return False
    return got == value and reader.pos == len(spelled)  # it ends at the line end


def _spell(value: str, style: _Style, what: str) -> str:
    """``value`` as a Modelfile value that reads back as exactly ``value``."""
    for quote in _FORMS[style]:
        if not quote and (not value or value != value.strip()):
            continue  # a bare value is never empty nor padded (editors strip line ends)
        spelled = f"{quote}{value}{quote}"
        if _reads_back(spelled, value):
            return spelled
    raise ModelfileError(
        f'The {what} cannot be written in a Modelfile: it has a line ending in " and one '
        "ending in \"\"\" (and in ' and '''), which no Modelfile quoting can hold; change it "
        f"and try again. It begins {value[:40]!r}."
    )


def _parameter_text(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)
    return str(value)


def render_modelfile(modelfile: Modelfile, *, name: str | None = None) -> str:
    """Write a Modelfile, as ``ollama show --modelfile`` does.

    ``parse_modelfile(render_modelfile(m)) == m`` for every Modelfile ``m`` whose
    values are writable (quotes are chosen so each value reads back exactly).

    Args:
        modelfile: What to write.
        name: The model's name, for the header comments (none without it).

    Returns:
        The Modelfile text (ends with a newline).

    Raises:
        ModelfileError: A value that no quoting can hold (see :func:`_spell`).
    """
    lines: list[str] = []
    if name is not None:
        lines += [
            '# Modelfile generated by "local-llm show"',
            "# To build a new Modelfile based on this, replace FROM with:",
            f"# FROM {name}",
            "",
        ]
    lines.append(f"FROM {_spell(modelfile.from_, 'bare', 'FROM')}")
    if modelfile.template is not None:
        lines.append(f"TEMPLATE {_spell(modelfile.template, 'block', 'TEMPLATE')}")
    if modelfile.system is not None:
        lines.append(f"SYSTEM {_spell(modelfile.system, 'block', 'SYSTEM')}")
    for key, value in modelfile.parameters.items():
        values = value if isinstance(value, list | tuple) else [value]
        for item in values:
            style: _Style = "quoted" if isinstance(item, str) else "bare"
            text = _spell(_parameter_text(item), style, f"PARAMETER {key}")
            lines.append(f"PARAMETER {key} {text}")
    for message in modelfile.messages:
        role = message["role"]
        text = _spell(message["content"], "bare", f"MESSAGE {role}")
        lines.append(f"MESSAGE {role} {text}")
    lines.extend(f"ADAPTER {_spell(path, 'bare', 'ADAPTER')}" for path in modelfile.adapters)
    if modelfile.license is not None:
        lines.append(f"LICENSE {_spell(modelfile.license, 'block', 'LICENSE')}")
    return "\n".join(lines) + "\n"


def modelfile_of(
    from_: str,
    *,
    system: str | None = None,
    parameters: Mapping[str, Any] | None = None,
    template: str | None = None,
    messages: Sequence[Mapping[str, str]] = (),
    adapters: Sequence[str | Path] = (),
    license: str | None = None,
) -> Modelfile:
    """A :class:`Modelfile` from a model's bound defaults (what ``show --modelfile`` writes)."""
    return Modelfile(
        from_=from_,
        parameters={
            key: list(value) if isinstance(value, list | tuple) else value
            for key, value in (parameters or {}).items()
        },
        system=system,
        template=template,
        messages=tuple({"role": m["role"], "content": m["content"]} for m in messages),
        adapters=tuple(str(a) for a in adapters),
        license=license,
    )
