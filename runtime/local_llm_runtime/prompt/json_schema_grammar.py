r"""JSON schema -> llama.cpp GBNF grammar, for every constraint a grammar can enforce.

Structured output (``format=schema``, LangChain ``with_structured_output``, LlamaIndex
``structured_predict``) and forced tool calls constrain generation with a grammar
built from a JSON schema, typically the one pydantic v2 emits. The converter that
ships with llama-cpp-python rejects regex shorthands (``\d``, ``\w``, ``\s``, ...),
ignores numeric bounds, ``format: email`` and ``uniqueItems``, and resolves ``$ref``
by the last path segment; so this module converts schemas itself, pure Python:

* ``$ref`` (any local JSON pointer: ``#/$defs/X``, ``#/definitions/X``, ``#``), in any
  order and recursive (trees, linked lists); ``allOf`` (merged), ``anyOf``, ``oneOf``
  (only when its alternatives cannot overlap, as pydantic's discriminated unions),
  ``enum``, ``const``, ``type`` (one or a list);
* objects: ``properties``, ``required``, ``additionalProperties`` (``dict[str, X]``),
  ``propertyNames``, ``maxProperties`` (and ``minProperties`` met by ``required``);
* arrays: ``items``, ``prefixItems`` (tuples), ``minItems``, ``maxItems``;
* strings: ``minLength``, ``maxLength``, ``pattern`` (a regex subset, below),
  ``format`` ``date``, ``time``, ``date-time``, ``uuid``/``uuid1``..``uuid5``,
  ``email``, ``ipv4``;
* integers and numbers: ``minimum``, ``maximum``, ``exclusiveMinimum``,
  ``exclusiveMaximum`` (whole-number bounds for ``number``).

Every output the grammar allows validates against the schema (the grammar may
allow fewer outputs than the schema, never more: e.g. no optional whitespace
beyond one space, no extra properties, no ``\u`` + four-hex-digit escapes). A keyword that
cannot be enforced raises :class:`~local_llm_runtime.errors.UnsupportedSchemaError`
naming the keyword and its JSON pointer, before any model is loaded. Purely
annotational keywords (``title``, ``description``, ``default``, ``examples``, ...)
are ignored.

Patterns follow Python's ``re`` (what ``jsonschema`` validates with): literals,
escapes, ``.``, classes with ranges and negation, the shorthands ``\d \w \s \D \W \S``
in and out of classes, groups (``(...)``, ``(?:...)``, ``(?P<n>...)``), ``|``,
quantifiers ``* + ? {n} {n,} {n,m} {,m}`` (lazy or not), and ``^``/``$`` (``\A``/``\Z``)
at the ends of the top-level alternatives; an unanchored side allows any text
there, as ``re.search`` does. Shorthands generate their ASCII members (Python's
``\d`` also matches other Unicode digits, so the ASCII set is the safe subset);
negated ones generate printable ASCII outside the class. Lookarounds,
backreferences, word boundaries and inline flags raise.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from local_llm_runtime.errors import UnsupportedSchemaError

__all__ = ["UnsupportedSchemaError", "schema_to_gbnf"]

ANNOTATIONS = frozenset(
    {
        "$anchor",
        "$comment",
        "$id",
        "$schema",
        "default",
        "deprecated",
        "description",
        "discriminator",  # OpenAPI; pydantic's oneOf enforces the mapping itself
        "examples",
        "readOnly",
        "title",
        "writeOnly",
    }
)
"""Keywords that constrain nothing: ignored."""

_STRING_KW = frozenset({"minLength", "maxLength", "pattern", "format"})
_NUMBER_KW = frozenset({"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"})
_OBJECT_KW = frozenset(
    {
        "properties",
        "required",
        "additionalProperties",
        "propertyNames",
        "minProperties",
        "maxProperties",
    }
)
_ARRAY_KW = frozenset({"items", "prefixItems", "minItems", "maxItems", "uniqueItems"})
_KNOWN = (
    ANNOTATIONS
    | _STRING_KW
    | _NUMBER_KW
    | _OBJECT_KW
    | _ARRAY_KW
    | {"type", "enum", "const", "$ref", "allOf", "anyOf", "oneOf", "$defs", "definitions"}
)
_TYPES = ("object", "array", "string", "integer", "number", "boolean", "null")
_CONTAINERS = frozenset({"$defs", "definitions"})

FORMAT_ANNOTATIONS = frozenset({"password", "binary"})
"""``format`` values that constrain nothing pydantic checks (``SecretStr``, ``bytes``)."""

_MAX_REPETITIONS = 2000
"""The most repetitions llama.cpp's grammar parser expands (``MAX_REPETITION_THRESHOLD``
in ``llama-grammar.cpp``): more is refused, and a larger upper bound is silently
dropped there, so counts above it are refused here, naming the keyword."""

_MAX_DIGITS = 16
"""Digits of an unbounded integer part (as llama.cpp's converter: 1-16)."""

# -- GBNF text helpers

_HEX = "[0-9a-fA-F]"
_PRIMITIVES: dict[str, str] = {
    "space": '" "?',
    # A JSON string character: no raw control characters, simple escapes only
    # (a \u escape pair would count as two characters against minLength).
    # Positive ranges: llama.cpp decodes F5-F7 leads to code points past U+10FFFF.
    "char": r'[ !#-\[\]-~\x80-\uD7FF\uE000-\U0010FFFF] | "\\" ["\\/bfnrt]',
    "string": r'"\"" char* "\"" space',
    "integral-part": "[0] | [1-9] [0-9]{0,15}",
    "decimal-part": "[0-9]{1,16}",
    "integer": '"-"? integral-part space',
    "number": '"-"? integral-part ("." decimal-part)? ([eE] [-+]? integral-part)? space',
    "boolean": '("true" | "false") space',
    "null": '"null" space',
    "value": "object | array | string | number | boolean | null",
    "object": '"{" space ( string ":" space value ("," space string ":" space value)* )? "}" space',
    "array": '"[" space ( value ("," space value)* )? "]" space',
}
_PRIMITIVE_DEPS: dict[str, tuple[str, ...]] = {
    "string": ("char", "space"),
    "integer": ("integral-part", "space"),
    "number": ("integral-part", "decimal-part", "space"),
    "boolean": ("space",),
    "null": ("space",),
    "value": ("object", "array", "string", "number", "boolean", "null"),
    "object": ("space", "string", "value"),
    "array": ("space", "value"),
}

_OCTET = '("25" [0-5] | "2" [0-4] [0-9] | "1" [0-9] [0-9] | [1-9] [0-9] | [0-9])'
_YEAR = '([1-9] [0-9]{3} | "0" [1-9] [0-9]{2} | "00" [1-9] [0-9] | "000" [1-9])'
_MONTH_DAY = (
    '(("0" [13578] | "1" [02]) "-" ("0" [1-9] | [12] [0-9] | "3" [01])'
    ' | ("0" [469] | "11") "-" ("0" [1-9] | [12] [0-9] | "30")'
    ' | "02" "-" ("0" [1-9] | "1" [0-9] | "2" [0-8]))'  # no Feb 29: not every year has one
)
_TIME = (
    '([01] [0-9] | "2" [0-3]) ":" [0-5] [0-9] ":" [0-5] [0-9] ("." [0-9]{1,6})?'
    ' ("Z" | [+-] ([01] [0-9] | "2" [0-3]) ":" [0-5] [0-9])'
)
_ATOM = "[a-zA-Z0-9_+-]{1,16}"
_LABEL = "[a-zA-Z0-9] ([a-zA-Z0-9-]{0,20} [a-zA-Z0-9])?"
_FORMATS: dict[str, tuple[str, int, int]] = {
    # name: (GBNF of the string's characters, shortest, longest)
    "date": (f'{_YEAR} "-" {_MONTH_DAY}', 10, 10),
    "time": (_TIME, 9, 21),
    "date-time": (f'{_YEAR} "-" {_MONTH_DAY} "T" {_TIME}', 20, 32),
    "email": (f'{_ATOM} ("." {_ATOM}){{0,2}} "@" ({_LABEL} "."){{1,3}} [a-zA-Z]{{2,10}}', 6, 130),
    "ipv4": (f'{_OCTET} ("." {_OCTET}){{3}}', 7, 15),
    "uuid": (
        f'{_HEX}{{8}} "-" {_HEX}{{4}} "-" {_HEX}{{4}} "-" {_HEX}{{4}} "-" {_HEX}{{12}}',
        36,
        36,
    ),
}
for _version in range(1, 6):  # pydantic UUID1..UUID5 check the version and RFC 4122 variant
    _FORMATS[f"uuid{_version}"] = (
        f'{_HEX}{{8}} "-" {_HEX}{{4}} "-" "{_version}" {_HEX}{{3}} "-" [89abAB] {_HEX}{{3}}'
        f' "-" {_HEX}{{12}}',
        36,
        36,
    )


def _literal(text: str) -> str:
    """A GBNF string literal matching ``text`` exactly."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t") + '"'


def _json_literal(value: Any) -> str:
    """A GBNF literal of ``value`` serialized as JSON."""
    return _literal(json.dumps(value, ensure_ascii=False))


def _group(alternatives: Sequence[str]) -> str:
    return alternatives[0] if len(alternatives) == 1 else "(" + " | ".join(alternatives) + ")"


_ATOMIC = re.compile(r'[A-Za-z0-9-]+|\[(?:\\.|[^\]\\])*\]|"(?:\\.|[^"\\])*"')


def _repeat(item: str, low: int, high: int | None) -> str:
    """``item`` repeated low..high times (``high`` None: unbounded), as GBNF."""
    if not _ATOMIC.fullmatch(item):
        item = f"({item})"
    if high is not None and high < low:
        raise ValueError("empty repetition")
    if high == 0:
        return ""
    if (low, high) == (0, None):
        return f"{item}*"
    if (low, high) == (1, None):
        return f"{item}+"
    if (low, high) == (0, 1):
        return f"{item}?"
    if low == high:
        return f"{item}{{{low}}}"
    return f"{item}{{{low},{'' if high is None else high}}}"


def _separated(item: str, low: int, high: int | None) -> str:
    """low..high ``item``s separated by ``"," space``."""
    if high == 0:
        return ""
    more = _repeat(f'"," space {item}', max(low - 1, 0), None if high is None else high - 1)
    first = f"{item} {more}".strip()
    return first if low > 0 else f"({first})?"


# -- integer and number ranges


def _same_length(low: str, high: str) -> list[str]:
    """Alternatives matching the decimal strings low..high, both of one length."""
    if low == high:
        return [_literal(low)]
    if len(low) == 1:
        return [f"[{low}-{high}]"]
    rest = len(low) - 1
    out: list[str] = []
    if low[0] == high[0]:
        return [f'"{low[0]}" ' + _group(_same_length(low[1:], high[1:]))]
    first, last = int(low[0]), int(high[0])
    if low[1:] == "0" * rest:
        start = first
    else:
        out.append(f'"{low[0]}" ' + _group(_same_length(low[1:], "9" * rest)))
        start = first + 1
    end = last if high[1:] == "9" * rest else last - 1
    if start <= end:
        digit = f"[{start}]" if start == end else f"[{start}-{end}]"
        out.append(f"{digit} [0-9]{{{rest}}}")
    if high[1:] != "9" * rest:
        out.append(f'"{high[0]}" ' + _group(_same_length("0" * rest, high[1:])))
    return out


def _natural_range(low: int, high: int | None) -> list[str]:
    """Alternatives matching the canonical decimals of low..high (0 <= low; None: no top)."""
    out: list[str] = []
    top = high if high is not None else 10**_MAX_DIGITS - 1
    for digits in range(len(str(low)), len(str(top)) + 1):
        first = max(low, 10 ** (digits - 1) if digits > 1 else 0)
        last = min(top, 10**digits - 1)
        if first > last:
            continue
        if high is None and first == 10 ** (digits - 1) and digits > len(str(low)):
            out.append(f"[1-9] [0-9]{{{digits - 1},{_MAX_DIGITS - 1}}}")
            break
        out += _same_length(str(first), str(last))
    return out


_ANY_FRACTION = '("." [0-9]{1,15})?'
_NONZERO_FRACTION = '"." [0-9]{0,14} [1-9]'


def _magnitude(low: int, low_in: bool, high: int | None, high_in: bool, whole: bool) -> list[str]:
    """Alternatives for the non-negative numbers in a range with whole-number bounds."""
    if whole:  # integers: make the bounds inclusive
        low, high = low + (not low_in), None if high is None else high - (not high_in)
        if high is not None and high < low:
            return []
        return _natural_range(low, high)
    if high is not None and high <= low:
        if high == low and low_in and high_in:
            return [_literal(str(low)) + ' ("." "0"{1,15})?']
        return []
    out = [_literal(str(low)) + " " + (_ANY_FRACTION if low_in else _NONZERO_FRACTION)]
    if high is None or low + 1 <= high - 1:
        between = _natural_range(low + 1, None if high is None else high - 1)
        if between:  # empty past the largest number the grammar writes
            out.append(_group(between) + " " + _ANY_FRACTION)
    if high is not None and high_in:
        out.append(_literal(str(high)) + ' ("." "0"{1,15})?')
    return out


def _number_range(
    low: int | None, low_in: bool, high: int | None, high_in: bool, whole: bool
) -> list[str]:
    """Alternatives for the numbers in [low, high] (bounds None: open; ``*_in``: inclusive)."""
    out: list[str] = []
    if high is None or high > 0 or (high == 0 and high_in):
        if low is not None and low >= 0:
            out += _magnitude(low, low_in, high, high_in, whole)
        else:
            out += _magnitude(0, True, high, high_in, whole)
    if low is None or low < 0:  # x = -m, m > 0
        m_low, m_low_in = (-high, high_in) if high is not None and high < 0 else (0, False)
        m_high = None if low is None else -low
        out += [
            '"-" ' + _group([alt]) for alt in _magnitude(m_low, m_low_in, m_high, low_in, whole)
        ]
    return out


# -- regular expressions (a subset of Python's re) -> GBNF

_MAX_CHAR = 0x10FFFF
Ranges = list[tuple[int, int]]


def _normalize(ranges: Ranges) -> Ranges:
    out: Ranges = []
    for low, high in sorted(ranges):
        if out and low <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], high))
        else:
            out.append((low, high))
    return out


def _complement(ranges: Ranges, within: Ranges | None = None) -> Ranges:
    """The chars of ``within`` (default: all of Unicode) that are not in ``ranges``."""
    out: Ranges = []
    for w_low, w_high in within if within is not None else [(0, _MAX_CHAR)]:
        cursor = w_low
        for low, high in _normalize(ranges):
            if high < cursor or low > w_high:
                continue
            if low > cursor:
                out.append((cursor, low - 1))
            cursor = max(cursor, high + 1)
        if cursor <= w_high:
            out.append((cursor, w_high))
    return _normalize(out)


_DIGIT: Ranges = [(0x30, 0x39)]
_WORD: Ranges = [(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)]
_SPACE: Ranges = [(0x09, 0x0D), (0x1C, 0x20)]  # ASCII chars Python's \s matches
_NON_ASCII: Ranges = [(0x80, _MAX_CHAR)]
_PRINTABLE: Ranges = [(0x20, 0x7E)]
# shorthand: (generated chars, every char it may match) -- the first is a safe subset.
_SHORTHANDS: dict[str, tuple[Ranges, Ranges]] = {
    "d": (_DIGIT, _DIGIT + _NON_ASCII),
    "w": (_WORD, _WORD + _NON_ASCII),
    "s": (_SPACE, _SPACE + _NON_ASCII),
    "D": (_complement(_DIGIT, _PRINTABLE), _complement(_DIGIT)),
    "W": (_complement(_WORD, _PRINTABLE), _complement(_WORD)),
    "S": (_complement(_SPACE, _PRINTABLE), _complement(_SPACE)),
}
_ESCAPED_CHARS = {"t": "\t", "n": "\n", "r": "\r", "f": "\f", "v": "\v", "a": "\a", "0": "\0"}
_JSON_ESCAPES = {0x22: '"\\\\\\""', 0x5C: '"\\\\\\\\"', 0x0A: '"\\\\n"', 0x09: '"\\\\t"'}
_JSON_ESCAPES[0x0D] = '"\\\\r"'
_UNWRITABLE: Ranges = [(0, 0x1F), (0x22, 0x22), (0x5C, 0x5C), (0x7F, 0x7F), (0xD800, 0xDFFF)]


def _class_char(code: int) -> str:
    if chr(code).isascii() and chr(code).isalnum():
        return chr(code)
    if code < 0x100:
        return f"\\x{code:02X}"
    return f"\\u{code:04X}" if code < 0x10000 else f"\\U{code:08X}"


def _charset_gbnf(ranges: Ranges) -> str | None:
    """GBNF for one JSON-encoded character of ``ranges``; ``None`` if none can be written."""
    ranges = _normalize(ranges)
    plain = _complement(_UNWRITABLE, ranges)
    if (
        len(plain) == 1
        and plain[0][0] == plain[0][1]
        and not any(low <= code <= high for code in _JSON_ESCAPES for low, high in ranges)
    ):
        return _literal(chr(plain[0][0]))
    alternatives = []
    if plain:
        body = "".join(
            _class_char(low) if low == high else f"{_class_char(low)}-{_class_char(high)}"
            for low, high in plain
        )
        alternatives.append(f"[{body}]")
    for code, escape in _JSON_ESCAPES.items():
        if any(low <= code <= high for low, high in ranges):
            alternatives.append(escape)
    return _group(alternatives) if alternatives else None


class _PatternError(ValueError):
    """A regex outside the supported subset; the message says what."""


class _Regex:
    """Recursive-descent translation of one pattern into a GBNF expression."""

    def __init__(self, pattern: str) -> None:
        self.text = pattern
        self.pos = 0

    def fail(self, what: str) -> _PatternError:
        return _PatternError(f"{what} at offset {self.pos} of /{self.text}/")

    def peek(self) -> str | None:
        return self.text[self.pos] if self.pos < len(self.text) else None

    def translate(self) -> str:
        branches = [self.sequence(top=True)]
        while self.peek() == "|":
            self.pos += 1
            branches.append(self.sequence(top=True))
        if self.pos != len(self.text):
            raise self.fail("unbalanced ')'")
        return _group(branches)

    def sequence(self, top: bool = False) -> str:
        items: list[str] = []
        anchored_start = anchored_end = False
        while (char := self.peek()) is not None and char not in "|)":
            if anchored_end:
                raise self.fail("'$' before the end of the pattern")
            if char == "^" or self.text.startswith("\\A", self.pos):
                if not top or items or anchored_start:
                    raise self.fail("'^' not at the start of the pattern")
                anchored_start = True
                self.pos += 1 if char == "^" else 2
                continue
            if char == "$" or self.text.startswith("\\Z", self.pos):
                if not top:
                    raise self.fail("'$' inside a group")
                anchored_end = True
                self.pos += 1 if char == "$" else 2
                continue
            items.append(self.quantified(self.atom()))
        if top:
            if not anchored_start:
                items.insert(0, "char*")  # re.search: the match may start anywhere
            if not anchored_end:
                items.append("char*")
        return " ".join(items) if items else '""'

    def atom(self) -> str:
        char = self.text[self.pos]
        if char in "*+?":
            raise self.fail(f"nothing to repeat before {char!r}")
        if char == "(":
            self.pos += 1
            if self.text.startswith("?:", self.pos):
                self.pos += 2
            elif self.text.startswith("?P<", self.pos):
                end = self.text.find(">", self.pos)
                if end < 0:
                    raise self.fail("unterminated group name")
                self.pos = end + 1
            elif self.peek() == "?":
                raise self.fail("lookarounds, inline flags and conditionals are not supported")
            inner = [self.sequence()]
            while self.peek() == "|":
                self.pos += 1
                inner.append(self.sequence())
            if self.peek() != ")":
                raise self.fail("missing ')'")
            self.pos += 1
            return "(" + " | ".join(inner) + ")"
        if char == "[":
            return self.char_class()
        if char == ".":
            self.pos += 1
            return self.chars(_complement([(0x0A, 0x0A)]))
        if char == "\\":
            shorthand, ranges = self.escape()
            return self.chars(shorthand[0] if shorthand else ranges)
        self.pos += 1
        return self.chars([(ord(char), ord(char))])

    def chars(self, ranges: Ranges) -> str:
        gbnf = _charset_gbnf(ranges)
        if gbnf is None:
            raise self.fail("a character set that no JSON string character can match")
        return gbnf

    def escape(self) -> tuple[tuple[Ranges, Ranges] | None, Ranges]:
        r"""Read ``\x``; return (shorthand sets, []) or (None, [the one char])."""
        self.pos += 1
        char = self.peek()
        if char is None:
            raise self.fail("a trailing backslash")
        self.pos += 1
        if char in _SHORTHANDS:
            return _SHORTHANDS[char], []
        if char in _ESCAPED_CHARS:
            code = ord(_ESCAPED_CHARS[char])
        elif char in "xuU":
            size = {"x": 2, "u": 4, "U": 8}[char]
            digits = self.text[self.pos : self.pos + size]
            if len(digits) != size or not all(c in "0123456789abcdefABCDEF" for c in digits):
                raise self.fail(f"a bad \\{char} escape")
            self.pos += size
            code = int(digits, 16)
        elif char.isascii() and char.isalnum():
            raise self.fail(
                f"'\\{char}' (backreferences, word boundaries and named characters"
                " are not supported)"
            )
        else:
            code = ord(char)
        return None, [(code, code)]

    def char_class(self) -> str:
        self.pos += 1
        negated = self.peek() == "^"
        self.pos += negated
        generated: Ranges = []  # the chars to generate (positive class)
        matched: Ranges = []  # every char the items may match (for a negated class)
        first = True
        while True:
            char = self.peek()
            if char is None:
                raise self.fail("missing ']'")
            if char == "]" and not first:
                self.pos += 1
                break
            first = False
            shorthand, single = self.class_item()
            if shorthand is not None:
                generated += shorthand[0]
                matched += shorthand[1]
                continue
            low = single
            if self.peek() == "-" and self.text[self.pos + 1 : self.pos + 2] not in ("]", ""):
                self.pos += 1
                shorthand, high = self.class_item()
                if shorthand is not None:
                    raise self.fail("a range that ends in a shorthand class")
                if high < low:
                    raise self.fail("a reversed range")
            else:
                high = low
            generated.append((low, high))
            matched.append((low, high))
        if negated:
            # Printable ASCII only when a shorthand's Unicode members are unknown.
            space = _PRINTABLE if any(h > 0x7F for _, h in matched) else None
            return self.chars(_complement(matched, space))
        return self.chars(generated)

    def class_item(self) -> tuple[tuple[Ranges, Ranges] | None, int]:
        char = self.text[self.pos]
        if char == "\\":
            shorthand, ranges = self.escape()
            return shorthand, ranges[0][0] if ranges else -1
        if char == "[" and self.text[self.pos + 1 : self.pos + 2] in (":", "=", "."):
            raise self.fail("POSIX classes are not supported")
        self.pos += 1
        return None, ord(char)

    def quantified(self, atom: str) -> str:
        char = self.peek()
        low: int
        high: int | None
        if char == "*":
            low, high = 0, None
        elif char == "+":
            low, high = 1, None
        elif char == "?":
            low, high = 0, 1
        elif char == "{" and (m := re.match(r"\{(\d*)(,(\d*))?\}", self.text[self.pos :])):
            if not m.group(1) and m.group(2) is None:
                return atom
            low = int(m.group(1) or 0)
            high = low if m.group(2) is None else (int(m.group(3)) if m.group(3) else None)
            if high is not None and high < low:
                raise self.fail("a quantifier whose minimum exceeds its maximum")
            if max(low, high or 0) > _MAX_REPETITIONS:
                raise self.fail(f"a repetition count over {_MAX_REPETITIONS}")
            self.pos += len(m.group()) - 1
        else:
            return atom
        self.pos += 1
        if self.peek() == "?":  # lazy: the same language
            self.pos += 1
        elif self.peek() == "+":
            raise self.fail("possessive quantifiers are not supported")
        if self.peek() in ("*", "+", "?") or (
            self.peek() == "{" and re.match(r"\{\d*(,\d*)?\}", self.text[self.pos :])
        ):
            raise self.fail("multiple repeat")
        return _repeat(atom, low, high) or '""'


def pattern_gbnf(pattern: str) -> str:
    """Translate a JSON-schema ``pattern`` into GBNF over a JSON string's characters.

    Args:
        pattern: The regex, with Python ``re`` semantics (``re.search``).

    Returns:
        A GBNF expression using the ``char`` rule, matching the JSON-encoded content
        (without quotes) of strings the pattern matches.

    Raises:
        ValueError: If the pattern is not valid, or uses an unsupported feature.
    """
    try:
        re.compile(pattern)
    except re.error as exc:
        raise _PatternError(f"invalid regular expression /{pattern}/: {exc}") from exc
    return _Regex(pattern).translate()


# -- the converter


def _pointer(path: str, key: str | int) -> str:
    return f"{path}/{str(key).replace('~', '~0').replace('/', '~1')}"


def _types_of(schema: Mapping[str, Any]) -> list[str]:
    kind = schema.get("type")
    if isinstance(kind, str):
        return [kind]
    if isinstance(kind, list):
        return [str(k) for k in kind]
    return []


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "integer" if value.is_integer() else "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


class _Converter:
    def __init__(self, root: Mapping[str, Any]) -> None:
        self.root = root
        self.rules: dict[str, str] = {}
        self.bodies: dict[str, str] = {}
        self.refs: dict[str, str] = {}

    # rules

    def primitive(self, name: str) -> str:
        if name not in self.rules:
            self.rules[name] = _PRIMITIVES[name]
            for dep in _PRIMITIVE_DEPS.get(name, ()):
                self.primitive(dep)
        return name

    def add(self, hint: str, body: str) -> str:
        if body in self.bodies:
            return self.bodies[body]
        base = re.sub(r"[^a-zA-Z0-9-]+", "-", hint).strip("-").lower() or "r"
        name, index = base, 0
        while name in self.rules or name in _PRIMITIVES or name == "root":
            index += 1
            name = f"{base}-{index}"
        self.rules[name] = body
        self.bodies[body] = name
        return name

    def reserve(self, hint: str) -> str:
        name = self.add(hint, f"# reserved {len(self.rules)}")
        del self.bodies[self.rules[name]]
        return name

    def define(self, name: str, body: str) -> None:
        self.rules[name] = body

    # schema walking

    def error(self, keyword: str, path: str, reason: str) -> UnsupportedSchemaError:
        return UnsupportedSchemaError(keyword, _pointer(path, keyword), reason)

    def resolve(self, ref: Any, path: str) -> tuple[Any, str]:
        if not isinstance(ref, str) or not ref.startswith("#"):
            raise self.error("$ref", path, f"is {ref!r}: only local references (#/...) are used")
        node: Any = self.root
        for part in ref[1:].split("/")[1:] if ref != "#" else []:
            key = part.replace("~1", "/").replace("~0", "~")
            if isinstance(node, Mapping) and key in node:
                node = node[key]
            elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
                node = node[int(key)]
            else:
                raise self.error("$ref", path, f"points at {ref!r}, which does not exist")
        return node, ref

    def constraints(self, schema: Mapping[str, Any], *drop: str) -> dict[str, Any]:
        return {
            k: v
            for k, v in schema.items()
            if k not in ANNOTATIONS and k not in _CONTAINERS and k not in drop
        }

    def visit(self, schema: Any, path: str, hint: str) -> str:
        """Return the name of a rule matching exactly the JSON values ``schema`` allows."""
        if schema is True or (isinstance(schema, Mapping) and not self.constraints(schema)):
            return self.primitive("value")
        if not isinstance(schema, Mapping):
            raise UnsupportedSchemaError(
                "false" if schema is False else "schema", path, "allows no value at all"
            )
        for key in schema:
            if key not in _KNOWN:
                raise self.error(key, path, "is not supported by the grammar converter")
        if "$ref" in schema:
            rest = self.constraints(schema, "$ref")
            if not rest:
                return self.ref_rule(schema["$ref"], path)
            target, where = self.resolve(schema["$ref"], path)
            merged = self.merge(self.deref(target, where), rest, path)
            return self.visit(merged, path, hint)
        if "allOf" in schema:
            parts = schema["allOf"]
            if not isinstance(parts, list) or not parts:
                raise self.error("allOf", path, "must be a non-empty list")
            merged = self.constraints(schema, "allOf")
            for index, part in enumerate(parts):
                part_path = _pointer(_pointer(path, "allOf"), index)
                merged = self.merge(merged, self.deref(part, part_path), part_path)
            return self.visit(merged, path, hint)
        for keyword in ("anyOf", "oneOf"):
            if keyword in schema:
                return self.union(schema, keyword, path, hint)
        if "const" in schema or "enum" in schema:
            return self.literals(schema, path, hint)
        types = _types_of(schema)
        for kind in types:
            if kind not in _TYPES:
                raise self.error("type", path, f"is {kind!r}, not a JSON type")
        if not types:
            types = self.inferred_type(schema)
        rules = [self.typed(schema, kind, path, hint) for kind in dict.fromkeys(types)]
        return rules[0] if len(rules) == 1 else self.add(hint, " | ".join(rules))

    def ref_rule(self, ref: Any, path: str) -> str:
        target, where = self.resolve(ref, path)
        if where == "#":
            return "root"
        if where not in self.refs:
            name = self.reserve(where.rsplit("/", 1)[-1])
            self.refs[where] = name
            self.define(name, self.visit(target, where, name))
        return self.refs[where]

    def deref(self, schema: Any, path: str) -> Any:
        """``schema`` with a top-level ``$ref`` replaced by its target (for merging)."""
        for _ in range(32):
            if not (isinstance(schema, Mapping) and "$ref" in schema):
                return schema
            target, where = self.resolve(schema["$ref"], path)
            rest = self.constraints(schema, "$ref")
            schema = self.merge(self.deref(target, where), rest, path) if rest else target
        raise self.error("$ref", path, "forms a cycle of references")

    def merge(self, first: Any, second: Any, path: str) -> dict[str, Any]:
        """The intersection of two schemas when it is a schema of one level (allOf)."""
        if first is True or second is True:
            return dict(self.constraints(second if first is True else first))
        if not isinstance(first, Mapping) or not isinstance(second, Mapping):
            raise self.error("allOf", path, "combines a schema that allows nothing")
        first, second = self.deref(first, path), self.deref(second, path)
        out = dict(self.constraints(first))
        for key, value in self.constraints(second).items():
            if key not in out or out[key] == value:
                out[key] = value
            elif key == "properties":
                props = dict(out[key])
                for name, sub in value.items():
                    props[name] = self.merge(props[name], sub, path) if name in props else sub
                out[key] = props
            elif key == "required":
                out[key] = list(dict.fromkeys([*out[key], *value]))
            elif key == "type":
                both = [t for t in _types_of(out) if t in _types_of(second)]
                if not both and {"number", "integer"} <= {*_types_of(out), *_types_of(second)}:
                    both = ["integer"]
                if not both:
                    raise self.error("type", path, "combines types that have no value in common")
                out[key] = both[0] if len(both) == 1 else both
            elif key in ("minimum", "minLength", "minItems", "exclusiveMinimum", "minProperties"):
                out[key] = max(out[key], value)
            elif key in ("maximum", "maxLength", "maxItems", "exclusiveMaximum", "maxProperties"):
                out[key] = min(out[key], value)
            elif key == "allOf":
                out[key] = [*out[key], *value]
            else:
                raise self.error(
                    key, path, "appears in two parts of an allOf with different values"
                )
        return out

    def union(self, schema: Mapping[str, Any], keyword: str, path: str, hint: str) -> str:
        options = schema[keyword]
        where = _pointer(path, keyword)
        if not isinstance(options, list) or not options:
            raise self.error(keyword, path, "must be a non-empty list")
        rest = self.constraints(schema, keyword)
        alternatives = [
            self.merge(self.deref(option, _pointer(where, i)), rest, _pointer(where, i))
            if rest
            else option
            for i, option in enumerate(options)
        ]
        if keyword == "oneOf":
            self.check_disjoint(alternatives, path)
        rules = [
            self.visit(option, _pointer(where, i), f"{hint}-{i}")
            for i, option in enumerate(alternatives)
        ]
        rules = list(dict.fromkeys(rules))
        return rules[0] if len(rules) == 1 else self.add(hint, " | ".join(rules))

    def check_disjoint(self, options: list[Any], path: str) -> None:
        """oneOf: every output must match exactly one option; prove no two overlap."""
        shapes = []
        for alternative in options:
            option = self.deref(alternative, path)
            if not isinstance(option, Mapping):
                raise self.error("oneOf", path, "has an alternative that is not an object schema")
            kinds = set(_types_of(option))
            if "const" in option:
                kinds = {_json_type(option["const"])}
            elif isinstance(option.get("enum"), list):
                kinds = {_json_type(v) for v in option["enum"]}
            if "number" in kinds:
                kinds.add("integer")
            tags: dict[str, set[str]] = {}
            for name, prop in dict(option.get("properties") or {}).items():
                sub = self.deref(prop, path)
                if name in option.get("required", []) and isinstance(sub, Mapping):
                    if "const" in sub:
                        tags[name] = {json.dumps(sub["const"])}
                    elif isinstance(sub.get("enum"), list):
                        tags[name] = {json.dumps(v) for v in sub["enum"]}
            shapes.append((kinds, tags))
        for i, (kinds_a, tags_a) in enumerate(shapes):
            for kinds_b, tags_b in shapes[i + 1 :]:
                if kinds_a and kinds_b and not kinds_a & kinds_b:
                    continue
                if any(not tags_a[k] & tags_b[k] for k in tags_a.keys() & tags_b.keys()):
                    continue
                raise self.error(
                    "oneOf",
                    path,
                    "has alternatives that may match the same value (use anyOf,"
                    " or a discriminator field with a distinct const in each)",
                )

    def literals(self, schema: Mapping[str, Any], path: str, hint: str) -> str:
        keyword = "const" if "const" in schema else "enum"
        values = [schema["const"]] if keyword == "const" else schema["enum"]
        if not isinstance(values, list):
            raise self.error("enum", path, "must be a list")
        for extra in self.constraints(schema, "const", "enum", "type"):
            raise self.error(extra, path, f"next to {keyword!r} is not supported")
        types = _types_of(schema)
        if types:
            values = [
                v
                for v in values
                if _json_type(v) in types or ("number" in types and _json_type(v) == "integer")
            ]
        if not values:
            raise self.error(keyword, path, "allows no value of the given type")
        body = " | ".join(dict.fromkeys(_json_literal(v) for v in values))
        return self.add(hint, f"({body}) {self.primitive('space')}")

    def inferred_type(self, schema: Mapping[str, Any]) -> list[str]:
        for kind, keywords in (
            ("object", _OBJECT_KW),
            ("array", _ARRAY_KW),
            ("string", _STRING_KW),
            ("number", _NUMBER_KW),
        ):
            if keywords & schema.keys():
                return [kind]
        return ["object", "array", "string", "number", "boolean", "null"]

    def typed(self, schema: Mapping[str, Any], kind: str, path: str, hint: str) -> str:
        if kind == "string":
            return self.string(schema, path, hint)
        if kind in ("integer", "number"):
            return self.number(schema, kind, path, hint)
        if kind == "object":
            return self.object(schema, path, hint)
        if kind == "array":
            return self.array(schema, path, hint)
        return self.primitive(kind)

    def counts(self, schema: Mapping[str, Any], path: str, *keys: str) -> None:
        """Refuse counts the grammar engine cannot repeat (see :data:`_MAX_REPETITIONS`)."""
        for key in keys:
            value = schema.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > _MAX_REPETITIONS:
                raise self.error(
                    key,
                    path,
                    f"is {value}: llama.cpp's grammar engine repeats at most "
                    f"{_MAX_REPETITIONS} times",
                )

    def string(self, schema: Mapping[str, Any], path: str, hint: str) -> str:
        self.counts(schema, path, "minLength", "maxLength")
        low, high = schema.get("minLength", 0), schema.get("maxLength")
        for key, value in (("minLength", low), ("maxLength", high)):
            if value is not None and (not isinstance(value, int) or value < 0):
                raise self.error(key, path, f"is {value!r}, not a count")
        if high is not None and high < low:
            raise self.error("maxLength", path, "is below minLength: no string fits")
        fmt, pattern = schema.get("format"), schema.get("pattern")
        if fmt in FORMAT_ANNOTATIONS:
            fmt = None
        quote = r'"\""'
        if fmt is not None and pattern is not None:
            raise self.error("pattern", path, f"together with format {fmt!r} is not supported")
        self.primitive("space")
        self.primitive("char")
        if fmt is not None:
            if fmt not in _FORMATS:
                known = ", ".join(sorted(_FORMATS))
                raise self.error("format", path, f"is {fmt!r}; the formats enforced are {known}")
            body, shortest, longest = _FORMATS[fmt]
            if low > shortest or (high is not None and high < longest):
                raise self.error(
                    "maxLength" if high is not None and high < longest else "minLength",
                    path,
                    f"together with format {fmt!r} is not supported",
                )
            return self.add(f"{hint}-{fmt}", f"{quote} {body} {quote} space")
        if pattern is not None:
            if low or high is not None:
                raise self.error(
                    "minLength" if low else "maxLength",
                    path,
                    "together with pattern is not supported (put the length in the pattern)",
                )
            if not isinstance(pattern, str):
                raise self.error("pattern", path, "must be a string")
            try:
                body = pattern_gbnf(pattern)
            except _PatternError as exc:
                raise self.error("pattern", path, f"cannot be enforced: {exc}") from None
            return self.add(f"{hint}-pattern", f"{quote} {body} {quote} space")
        if not low and high is None:
            return self.primitive("string")
        return self.add(f"{hint}-string", f"{quote} {_repeat('char', low, high)} {quote} space")

    def number(self, schema: Mapping[str, Any], kind: str, path: str, hint: str) -> str:
        whole = kind == "integer"
        step = schema.get("multipleOf")
        if step is not None and not (whole and step == 1):
            raise self.error("multipleOf", path, "cannot be enforced by a grammar")
        low: float | None = None
        high: float | None = None
        low_in = high_in = True
        low_key, high_key = "minimum", "maximum"
        for key in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
            value = schema.get(key)
            if value is None:
                continue
            if isinstance(value, bool):  # draft 4: exclusiveMinimum: true modifies minimum
                if key == "exclusiveMinimum":
                    low_in = not value
                elif key == "exclusiveMaximum":
                    high_in = not value
                continue
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise self.error(key, path, f"is {value!r}, not a finite number")
            inclusive = not key.startswith("exclusive")
            if "inimum" in key and (low is None or value > low or (value == low and not inclusive)):
                low, low_in, low_key = value, inclusive, key
            elif "aximum" in key and (
                high is None or value < high or (value == high and not inclusive)
            ):
                high, high_in, high_key = value, inclusive, key
        if low is None and high is None:
            return self.primitive(kind)
        bounds: list[int | None] = []
        for key, value, up in ((low_key, low, True), (high_key, high, False)):
            if value is None or float(value).is_integer():
                bounds.append(None if value is None else int(value))
            elif whole:  # integers: round inward to an inclusive whole bound
                bounds.append(math.ceil(value) if up else math.floor(value))
                if up:
                    low_in = True
                else:
                    high_in = True
            else:
                raise self.error(key, path, f"is {value!r}: only whole-number bounds are enforced")
        largest = 10**_MAX_DIGITS - 1  # numbers the grammar writes have at most this many digits
        if bounds[0] is not None and bounds[0] < -largest:
            bounds[0] = None  # looser than the grammar's own range
        if bounds[1] is not None and bounds[1] > largest:
            bounds[1] = None
        for key, bound, beyond in ((low_key, bounds[0], largest), (high_key, bounds[1], -largest)):
            if bound is not None and (bound > beyond if key == low_key else bound < beyond):
                raise self.error(
                    key,
                    path,
                    f"is {schema[key]!r}: numbers of more than {_MAX_DIGITS} digits cannot be "
                    "enforced by a grammar",
                )
        if bounds[0] is None and bounds[1] is None:
            return self.primitive(kind)
        alternatives = _number_range(bounds[0], low_in, bounds[1], high_in, whole)
        if not alternatives:
            culprit = high_key if high is not None else low_key
            raise self.error(culprit, path, "leaves no number between the bounds")
        return self.add(f"{hint}-{kind}", f"{_group(alternatives)} {self.primitive('space')}")

    def object(self, schema: Mapping[str, Any], path: str, hint: str) -> str:
        properties = schema.get("properties") or {}
        required = schema.get("required") or []
        if not isinstance(properties, Mapping) or not isinstance(required, list):
            raise self.error("properties", path, "must be an object (and required a list)")
        for name in required:
            if name not in properties:
                raise self.error(
                    "required", path, f"names {name!r}, which has no entry in properties"
                )
        extra = schema.get("additionalProperties", True)
        names = schema.get("propertyNames")
        self.primitive("space")
        kvs: dict[str, str] = {}
        for name, sub in properties.items():
            where = _pointer(_pointer(path, "properties"), name)
            value = self.visit(sub, where, f"{hint}-{name}")
            kvs[name] = self.add(
                f"{hint}-{name}-kv", f'{_json_literal(name)} space ":" space {value}'
            )
        self.counts(schema, path, "maxProperties")
        low, high = schema.get("minProperties", 0), schema.get("maxProperties")
        add: str | None = None
        if "properties" not in schema and extra is not False:
            # A dict: free keys (properties given: none generated, so none can clash).
            key = self.primitive("string")
            if names is not None and names is not True:
                key = self.visit(
                    {"type": "string", **dict(names)},
                    _pointer(path, "propertyNames"),
                    f"{hint}-key",
                )
            value = self.visit(extra, _pointer(path, "additionalProperties"), f"{hint}-value")
            add = self.add(f"{hint}-additional-kv", f'{key} ":" space {value}')
        elif names not in (None, True):
            raise self.error("propertyNames", path, "next to properties is not supported")
        if low and (add is not None or low > len(required)):
            raise self.error(
                "minProperties", path, "cannot be enforced (only the required properties are)"
            )
        if high is not None and add is None and high < len(properties):
            raise self.error("maxProperties", path, "is below the number of properties")
        order = [kvs[n] for n in properties if n in required]
        optional = [kvs[n] for n in properties if n not in required]
        body = '"{" space '
        if order:
            body += ' "," space '.join(order)
            body += "".join(f' ("," space {kv})?' for kv in optional)
            if add is not None:
                body += " " + _repeat(f'"," space {add}', 0, high)
        elif optional:
            # The first one present starts the list; every later one may follow.
            tail = ""
            starts = []
            for kv in reversed(optional):
                starts.append(f"{kv} {tail}".strip())
                tail = self.add(f"{hint}-tail", f'("," space {kv})? {tail}'.strip())
            body += "(" + " | ".join(reversed(starts)) + ")?"
        elif add is not None:
            body += _separated(add, 0, high)
        return self.add(hint or "object", body + ' "}" space')

    def array(self, schema: Mapping[str, Any], path: str, hint: str) -> str:
        if schema.get("uniqueItems") is True and schema.get("maxItems", 2) > 1:
            raise self.error("uniqueItems", path, "cannot be enforced by a grammar (use a list)")
        self.counts(schema, path, "minItems", "maxItems")
        low, high = schema.get("minItems", 0), schema.get("maxItems")
        if high is not None and high < low:
            raise self.error("maxItems", path, "is below minItems: no array fits")
        prefix = schema.get("prefixItems") or []
        items = schema.get("items", True if not prefix else None)
        if isinstance(items, list):  # draft 4-7 tuples
            prefix, items = items, schema.get("additionalItems")
        self.primitive("space")
        parts = [
            self.visit(sub, _pointer(_pointer(path, "prefixItems"), i), f"{hint}-{i}")
            for i, sub in enumerate(prefix)
        ]
        if high is not None and high < len(parts):
            parts = parts[:high]
        more_low = max(low - len(parts), 0)
        more_high = None if high is None else high - len(parts)
        if items is False or (items is None and more_low == 0):
            item = None
            if more_low:
                raise self.error("minItems", path, "asks for more items than the tuple allows")
        else:
            item = self.visit(
                True if items is None else items, _pointer(path, "items"), f"{hint}-item"
            )
        body = '"[" space ' + ' "," space '.join(parts)
        if item is not None and more_high != 0:
            if parts:
                body += " " + _repeat(f'"," space {item}', more_low, more_high)
            else:
                body += _separated(item, more_low, more_high)
        return self.add(hint or "array", body + ' "]" space')


def schema_to_gbnf(schema: Mapping[str, Any] | bool) -> str:
    """Build a GBNF grammar whose outputs are JSON values valid under ``schema``.

    Args:
        schema: A JSON schema (draft 2020-12 as pydantic v2 emits; drafts 4-7 mostly work),
            or ``True`` for any JSON value.

    Returns:
        GBNF text, one ``name ::= body`` rule per line, root rule ``root``. Rule names
        are made of ``[a-z0-9-]``.

    Raises:
        UnsupportedSchemaError: If the schema holds a constraint a grammar cannot enforce
            (the message names the keyword and its JSON pointer) or is malformed.
    """
    if not isinstance(schema, (Mapping, bool)):
        raise UnsupportedSchemaError("schema", "#", "is not a JSON object")
    converter = _Converter(schema if isinstance(schema, Mapping) else {})
    try:
        root = converter.visit(schema, "#", "root")
    except RecursionError:
        raise UnsupportedSchemaError("schema", "#", "nests too deeply") from None
    rules = {"root": root, **converter.rules}
    return "\n".join(f"{name} ::= {body}" for name, body in rules.items()) + "\n"
