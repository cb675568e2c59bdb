"""Tool definitions as clients send them: one normal form, one argument check.

Clients describe the same tool in several shapes: OpenAI dicts with
``parameters`` missing or ``None`` (a tool without parameters), ``"required":
null`` (some SDKs), bare function dicts without the ``{"type": "function"}``
wrapper, LangChain- and LlamaIndex-converted tools. :func:`normalize_tools` turns
them all into ``{"type": "function", "function": {"name", "description"?,
"parameters"}}`` with an object schema for ``parameters``; every consumer (the
chat template, the forcing grammar, the parser's argument check) reads only
that form.

:func:`validate_arguments` checks a call's arguments against the tool's schema
with ``jsonschema``. Parameter schemas are *closed* for the check, as OpenAI's
strict mode: an object schema that declares ``properties`` accepts no other
names unless it says ``additionalProperties`` (or ``patternProperties`` /
``unevaluatedProperties``) itself. So a model that echoes the schema
(``{"type": "object", "properties": {}}``) to a tool without parameters does
not pass. llama.cpp's grammar converter closes such objects too, so a call
forced by the grammar always validates.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from local_llm_runtime.errors import InvalidOptionError

__all__ = [
    "check_json_schema",
    "closed_schema",
    "normalize_tools",
    "tool_schemas",
    "validate_arguments",
]


def _empty_parameters() -> dict[str, Any]:
    """The parameters of a tool that takes none (a fresh dict each time)."""
    return {"type": "object", "properties": {}}


_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SCHEMA_VALUES = (
    "items",
    "additionalItems",
    "additionalProperties",
    "unevaluatedProperties",
    "not",
    "if",
    "then",
    "else",
    "contains",
    "propertyNames",
)
_OPEN_KEYS = ("additionalProperties", "patternProperties", "unevaluatedProperties")


def _sub(key: str, value: Any, fn: Callable[[Any, str], Any]) -> Any:
    """Apply ``fn(subschema, key)`` to the subschemas ``value`` holds under ``key``."""
    if key in _SCHEMA_MAPS and isinstance(value, Mapping):
        return {name: fn(sub, key) for name, sub in value.items()}
    if key in _SCHEMA_LISTS and isinstance(value, list):
        return [fn(sub, key) for sub in value]
    if key in _SCHEMA_VALUES:
        return [fn(sub, key) for sub in value] if isinstance(value, list) else fn(value, key)
    return value


def _clean(node: Any, _key: str = "") -> Any:
    """Drop ``null`` where JSON Schema wants a list or a mapping (``"required": null``)."""
    if not isinstance(node, Mapping):
        return node
    nullable = ("required", *_SCHEMA_MAPS, *_SCHEMA_LISTS)
    return {
        key: _sub(key, value, _clean)
        for key, value in node.items()
        if not (value is None and key in nullable)
    }


@functools.lru_cache(maxsize=256)
def _schema_problem(schema_json: str) -> str | None:
    from jsonschema import SchemaError, validators

    schema = json.loads(schema_json)
    cls = validators.validator_for(schema, default=validators.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except SchemaError as exc:
        where = "#/" + "/".join(str(part) for part in exc.absolute_path)
        return f"{exc.message} (at {where.rstrip('/')})"
    except RecursionError:
        return "it nests too deeply"
    return None


def check_json_schema(schema: Any, where: str) -> None:
    """Refuse a caller's JSON schema that is not one (checked against its meta-schema).

    Every schema a caller hands over goes through this before use: a tool's
    ``parameters`` (:func:`normalize_tools`) and a response ``format``, so a typo such
    as ``{"type": "strng"}`` is an error naming it, not a grammar that silently
    allows anything. ``"json"`` and booleans (any JSON) pass.

    Args:
        schema: The schema (draft 2020-12 unless its ``$schema`` names another).
        where: What it is, for the message (``"format"``, ``"tool 'f' parameters"``).

    Raises:
        InvalidOptionError: Not a mapping, or invalid under its meta-schema.
    """
    if schema == "json" or isinstance(schema, bool):
        return
    if not isinstance(schema, Mapping):
        raise InvalidOptionError(
            f"{where} must be a JSON schema (an object) or 'json', not {type(schema).__name__}."
        )
    try:
        text = json.dumps(schema, sort_keys=True)
    except (TypeError, ValueError, RecursionError):
        raise InvalidOptionError(f"{where} is not a JSON-serializable schema.") from None
    problem = _schema_problem(text)
    if problem is not None:
        raise InvalidOptionError(f"{where} is not a valid JSON schema: {problem}.")


def _parameters(name: str, params: Any) -> dict[str, Any]:
    if params is None:
        return _empty_parameters()
    if not isinstance(params, Mapping):
        raise InvalidOptionError(
            f"Tool {name!r}: 'parameters' must be a JSON schema object (a dict), "
            f"not {type(params).__name__}."
        )
    schema: dict[str, Any] = _clean(params)
    kind = schema.get("type", "object")
    if isinstance(kind, str) and kind != "object":
        raise InvalidOptionError(
            f"Tool {name!r}: 'parameters' must describe an object (type 'object'), not {kind!r}."
        )
    if schema.keys() <= {"type", "title", "description"}:  # declares nothing: takes nothing
        schema.update(_empty_parameters())
    schema.setdefault("type", "object")
    return schema


_PARAMETER_KEYS = ("parameters", "input_schema", "inputSchema")
"""Where a tool's argument schema is: OpenAI/Ollama, Anthropic, MCP."""


def normalize_tools(tools: Sequence[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    """Bring client tool definitions into one OpenAI form.

    Args:
        tools: ``{"type": "function", "function": {...}}`` dicts or bare function
            dicts ``{"name", "description", "parameters"}``; the schema may also be
            under ``input_schema`` (Anthropic) or ``inputSchema`` (MCP); it may be
            missing or ``None`` (no parameters) and may hold ``"required": null``.

    Returns:
        ``[{"type": "function", "function": {"name", "parameters", ...}}]``: the
        function's other keys (``description``, ``strict``) kept, ``parameters``
        an object schema (``{"type": "object", "properties": {}}`` for a tool
        without parameters, or one declaring no properties), ``null`` lists and
        mappings dropped at every level.

    Raises:
        InvalidOptionError: If a tool has no (or an empty) name, two tools share a name,
            a tool gives its schema under two keys, or its schema is not an object
            schema or not a valid JSON schema (:func:`check_json_schema`).
    """
    out: list[dict[str, Any]] = []
    names: set[str] = set()
    for tool in tools or ():
        function = tool.get("function", tool)
        if (
            not isinstance(function, Mapping)
            or not isinstance(function.get("name"), str)
            or not function["name"].strip()
        ):
            raise InvalidOptionError(
                f"A tool needs a name: expected {{'type': 'function', 'function': "
                f"{{'name': ..., 'parameters': ...}}}}, got {dict(tool)!r:.200}."
            )
        if function["name"] in names:
            raise InvalidOptionError(
                f"Two tools are named {function['name']!r}: the model could not tell which "
                "to call; give each tool its own name."
            )
        names.add(function["name"])
        given = [key for key in _PARAMETER_KEYS if function.get(key) is not None]
        if len(given) > 1:
            raise InvalidOptionError(
                f"Tool {function['name']!r} gives its parameters twice ({', '.join(given)}); "
                "keep one."
            )
        fn = {k: v for k, v in function.items() if k not in _PARAMETER_KEYS and v is not None}
        fn["parameters"] = _parameters(fn["name"], function.get(given[0]) if given else None)
        check_json_schema(fn["parameters"], f"Tool {fn['name']!r}: 'parameters'")
        out.append({"type": "function", "function": fn})
    return out


def closed_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """The schema with every object that declares ``properties`` closed to other names.

    Objects that say ``additionalProperties``, ``patternProperties`` or
    ``unevaluatedProperties`` keep their own rule; the branches of an ``allOf``
    are not closed one by one (each would reject the others' properties).
    """

    def close(node: Any, parent_key: str = "") -> Any:
        if not isinstance(node, Mapping):
            return node
        out = {key: _sub(key, value, close) for key, value in node.items()}
        declares = isinstance(node.get("properties"), Mapping)
        if declares and parent_key != "allOf" and not any(k in node for k in _OPEN_KEYS):
            out["additionalProperties"] = False
        return out

    result: dict[str, Any] = close(schema)
    return result


@functools.lru_cache(maxsize=256)
def _validator(schema_json: str) -> Any:
    from jsonschema import validators

    schema = json.loads(schema_json)
    cls = validators.validator_for(schema, default=validators.Draft202012Validator)
    return cls(schema)


def tool_schemas(tools: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each normalized tool's closed parameter schema, by tool name."""
    return {
        tool["function"]["name"]: closed_schema(tool["function"]["parameters"]) for tool in tools
    }


def validate_arguments(schema: Mapping[str, Any], arguments: Mapping[str, Any]) -> str | None:
    """Check a call's arguments against a (closed) parameter schema.

    Args:
        schema: The tool's parameter schema, as :func:`tool_schemas` gives it.
        arguments: The decoded arguments.

    Returns:
        ``None`` when they validate, else what is wrong, e.g. ``"Additional
        properties are not allowed ('properties', 'type' were unexpected)"`` or
        ``"at 'amount': 'x' is not of type 'integer'"``.
    """
    from jsonschema.exceptions import best_match

    try:
        validator = _validator(json.dumps(schema, sort_keys=True))
    except (TypeError, ValueError):  # not JSON-serializable: nothing to check against
        return None
    try:
        error = best_match(validator.iter_errors(dict(arguments)))
    except Exception as exc:  # an unresolvable $ref, a bad schema
        return f"the tool's parameter schema cannot be checked: {exc}"
    if error is None:
        return None
    where = "/".join(str(part) for part in error.absolute_path)
    return f"at {where!r}: {error.message}" if where else str(error.message)
