r"""llama.cpp grammars (GBNF) built from JSON schemas: the part every tool syntax shares.

:func:`tool_call_rules` turns the offered tools into rules whose ``call-root``
is one call object ``{"name": ..., <key>: {arguments}}``; each syntax wraps it
in its own markers (:meth:`ToolSyntax.grammar_root`). :func:`json_schema_gbnf`
is the grammar of structured output. Nothing here imports ``llama_cpp``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from local_llm_runtime.errors import InvalidOptionError
from local_llm_runtime.prompt.json_schema_grammar import schema_to_gbnf
from local_llm_runtime.prompt.tool_schema import normalize_tools

__all__ = ["JSON_GBNF", "json_schema_gbnf", "schema_gbnf", "tool_call_rules"]

JSON_GBNF = r"""
root   ::= object
value  ::= object | array | string | number | ("true" | "false" | "null") ws

object ::=
  "{" ws (
            string ":" ws value
    ("," ws string ":" ws value)*
  )? "}" ws

array  ::=
  "[" ws (
            value
    ("," ws value)*
  )? "]" ws

string ::=
  "\"" (
    [^"\\\x7F\x00-\x1F] |
    "\\" (["\\bfnrt] | "u" [0-9a-fA-F]{4}) # escapes
  )* "\"" ws

number ::= ("-"? ([0-9] | [1-9] [0-9]{0,15})) ("." [0-9]+)? ([eE] [-+]? [0-9] [1-9]{0,15})? ws

# Optional space: by convention, applied in this grammar after literal chars when allowed
ws ::= | " " | "\n" [ \t]{0,20}
"""
"""Any JSON object: llama-cpp-python's ``llama_cpp.llama_grammar.JSON_GBNF``, copied so
that ``prompt/`` imports no ``llama_cpp`` (a unit test keeps the two equal)."""

_GBNF_TOKEN = re.compile(
    r"""(?P<lit>"(?:\\.|[^"\\])*")|(?P<cls>\[(?:\\.|[^\]\\])*\])|(?P<rep>\{[0-9,\s]*\})"""
    r"|(?P<comment>#[^\n]*)|(?P<name>[A-Za-z0-9_-]+)|(?P<other>.)",
    re.DOTALL,
)
_LOOSE_CHAR = r'[^"\\] | "\\" '
_STRICT_CHAR = r'[^"\\\x7F\x00-\x1F] | "\\" '


def schema_gbnf(schema: Mapping[str, Any], prefix: str = "") -> str:
    """Convert a JSON schema (:mod:`..json_schema_grammar`), every rule name prefixed."""
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


def tool_call_rules(
    tools: Sequence[Mapping[str, Any]], *, name: str | None, key: str = "arguments"
) -> str:
    """The rules of one call object of the offered tools, the first rule ``call-root``.

    Args:
        tools: OpenAI-style tools (any shape :func:`normalize_tools` takes).
        name: The tool to call; ``None`` lets the model choose one of ``tools``.
        key: The key the arguments go under (``arguments``, ``parameters``).

    Returns:
        GBNF rules, every name prefixed ``call-`` (no ``root`` rule).

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
    return schema_gbnf(schema, "call-")


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
        return JSON_GBNF
    return schema_gbnf(schema) + "\n"
