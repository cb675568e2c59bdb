r"""JSON schema -> grammar: pydantic's everyday schemas convert and are enforced, or fail typed.

The table (``tests/support/schema_table.py``) holds schemas pydantic v2 emits for
models and TypedDicts. Each either converts, and every output the tiny GGUF
(random weights, byte vocabulary, temperature 1) produces under the grammar
through ``Engine.chat(format=...)`` validates with ``jsonschema`` (with format
checking) and with pydantic itself; or it fails before any generation with an
:class:`UnsupportedSchemaError` naming the keyword and its JSON pointer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import llama_cpp
import pytest

from local_llm_runtime.errors import InvalidOptionError, UnsupportedSchemaError
from local_llm_runtime.llama.engine import Engine
from local_llm_runtime.prompt.json_schema_grammar import pattern_gbnf, schema_to_gbnf
from local_llm_runtime.prompt.tool_calls import json_schema_gbnf, tool_call_gbnf
from tests.support.schema_table import CASES, SchemaCase

SEEDS = range(4)
NUM_PREDICT = 4000
# The 2020-12 checker: FormatChecker() also registers draft 3's "time" (HH:MM:SS, no
# offset), which contradicts RFC 3339's full-time that 2020-12 (and pydantic) use.
FORMATS = jsonschema.Draft202012Validator.FORMAT_CHECKER
CONVERTING = [case for case in CASES if case.unsupported is None]
REFUSED = [case for case in CASES if case.unsupported is not None]
STATS: dict[str, tuple[int, int, int]] = {}


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    eng = Engine()
    yield eng
    eng.pool.close()


@pytest.fixture(scope="module")
def vocab(tiny_gguf: Path) -> Iterator[Any]:
    llm = llama_cpp.Llama(model_path=str(tiny_gguf), n_ctx=256, verbose=False)
    yield llm._model.vocab
    llm.close()


def compiles(vocab: Any, gbnf: str) -> bool:
    sampler = llama_cpp.llama_sampler_init_grammar(vocab, gbnf.encode(), b"root")
    if not sampler:
        return False
    llama_cpp.llama_sampler_free(sampler)
    return True


def validate(case: SchemaCase, text: str) -> None:
    value = json.loads(text)  # strict JSON
    jsonschema.validate(value, case.schema, format_checker=FORMATS)
    case.validate_with_pydantic(text)


def test_the_table_is_big_enough() -> None:
    assert len(CASES) >= 30
    assert len(CONVERTING) >= 30


@pytest.mark.parametrize("case", CONVERTING, ids=lambda c: c.name)
def test_schema_converts_and_every_output_validates(
    case: SchemaCase, engine: Engine, tiny_gguf: Path, vocab: Any
) -> None:
    assert compiles(vocab, json_schema_gbnf(case.schema))
    natural = garbled = 0
    for seed in SEEDS:
        result = engine.chat(
            str(tiny_gguf),
            [{"role": "user", "content": "Answer in JSON."}],
            format=case.schema,
            options={"temperature": 1.0, "seed": seed, "num_predict": NUM_PREDICT},
        )
        if result.finish_reason != "stop":
            continue  # cut by num_predict: not a whole value
        natural += 1
        if "\ufffd" in result.text:
            # The random byte model wrote invalid UTF-8 (e.g. the overlong E0 99 94)
            # that llama.cpp's grammar decodes as a valid code point: a sampler
            # limitation, not the schema's; counted apart.
            garbled += 1
            continue
        validate(case, result.text)
    STATS[case.name] = (natural, garbled, len(SEEDS))


def test_most_outputs_end_by_themselves() -> None:
    """Outputs cut by ``num_predict`` prove nothing: they must be rare (runs after the table)."""
    if len(STATS) < len(CONVERTING):
        pytest.skip("run with the whole table")
    natural = sum(n for n, _, _ in STATS.values())
    garbled = sum(g for _, g, _ in STATS.values())
    total = sum(t for _, _, t in STATS.values())
    print(
        f"\n{total} outputs: {natural} ended naturally, {natural - garbled} validated,"
        f" {garbled} held invalid UTF-8 from the byte model"
    )
    assert natural >= 0.9 * total
    assert natural - garbled >= 0.7 * total


@pytest.mark.parametrize("case", REFUSED, ids=lambda c: c.name)
def test_unenforceable_schema_fails_before_load_naming_keyword_and_place(
    case: SchemaCase, engine: Engine, tiny_gguf: Path
) -> None:
    assert case.unsupported is not None
    keyword, pointer = case.unsupported
    with pytest.raises(UnsupportedSchemaError) as info:
        json_schema_gbnf(case.schema)
    assert (info.value.keyword, info.value.pointer) == (keyword, pointer)
    assert f"{keyword!r} at {pointer}" in str(info.value)
    assert isinstance(info.value, InvalidOptionError) and isinstance(info.value, ValueError)
    with pytest.raises(UnsupportedSchemaError, match=re.escape(pointer)):
        engine.chat(
            str(tiny_gguf),
            [{"role": "user", "content": "x"}],
            format=case.schema,
            options={"num_predict": 4},
        )


def test_forced_tool_call_uses_the_same_converter(vocab: Any) -> None:
    schema = next(c.schema for c in CASES if c.name == "pattern-d")
    tool = {"type": "function", "function": {"name": "f", "parameters": schema}}
    assert compiles(vocab, tool_call_gbnf("hermes", [tool]))
    bad = {"type": "object", "properties": {"s": {"type": "array", "uniqueItems": True}}}
    tool = {"type": "function", "function": {"name": "f", "parameters": bad}}
    with pytest.raises(UnsupportedSchemaError, match="uniqueItems"):
        tool_call_gbnf("hermes", [tool])


# -- patterns: each translation matches exactly what Python's re (jsonschema) accepts


PATTERNS: list[tuple[str, list[str], list[str]]] = [
    # pattern, strings it must generate-able (all valid), strings the grammar must refuse
    (r"^\d{4}$", ["2024", "0000"], ["202", "20245", "２０２４", "abcd"]),
    (r"^\S+@\S+$", ["a@b", "x.y@z.org"], ["a @b", "@b", "a@"]),
    (r"^\w+\s\w+$", ["Ada Lovelace", "a_1 b"], ["Ada  Lovelace", "Ada-Lovelace"]),
    (r"^\D\W\d$", ["a-1", "x 9"], ["1-1", "aa1", "a-x"]),
    (r"^[\d.-]+$", ["1.2-3", "-"], ["1,2", ""]),
    (r"^[^\d\s]+$", ["abc", "é"[0:0] + "x-y"], ["a1", "a b"]),
    (r"^[A-Z]{2}-\d{3,}$", ["AB-123", "XY-00001"], ["AB-12", "ab-123"]),
    (r"^(?:foo|bar)+(?P<n>\d)?$", ["foo", "barfoo7"], ["fo", "foo77"]),
    (r"\d", ["1", "a1b"], ["abc"]),  # unanchored: re.search semantics
    (r"^a.c$", ["abc", 'a"c', "a\\c"], ["ac", "a\nc"]),
    (r"^\$\d+\.\d{2}$", ["$3.50"], ["3.50", "$3.5"]),
    (r"^[\u00e0-\u00ff]+$", ["àé"], ["a"]),
]


def grammar_for(pattern: str) -> str:
    return schema_to_gbnf({"type": "string", "pattern": pattern})


def accepts(vocab: Any, gbnf: str, text: str) -> bool:
    """Whether the grammar accepts ``text`` (the JSON encoding of a string), via llama.cpp."""
    from local_llm_runtime.prompt.json_schema_grammar import _Converter  # noqa: F401  (import check)

    sampler = llama_cpp.llama_sampler_init_grammar(vocab, gbnf.encode(), b"root")
    assert sampler
    try:
        return _feed(vocab, sampler, json.dumps(text, ensure_ascii=False))
    finally:
        llama_cpp.llama_sampler_free(sampler)


def _feed(vocab: Any, sampler: Any, text: str) -> bool:
    """Push ``text`` byte token by byte token; False at the first rejected token or no EOG."""
    data = text.encode()
    tokens = _byte_tokens(vocab)
    one = llama_cpp.llama_token_data(0, 1.0, 0.0)
    array = llama_cpp.llama_token_data_array(
        data=llama_cpp.ctypes.pointer(one), size=1, selected=-1, sorted=False
    )
    for byte in [*data, None]:
        token = tokens["eos"] if byte is None else tokens[byte]
        one.id, one.logit = token, 1.0
        llama_cpp.llama_sampler_apply(sampler, llama_cpp.ctypes.byref(array))
        if one.logit == float("-inf"):
            return False
        if byte is not None:
            llama_cpp.llama_sampler_accept(sampler, token)
    return True


_TOKENS: dict[Any, int] = {}


def _byte_tokens(vocab: Any) -> dict[Any, int]:
    if not _TOKENS:
        n = llama_cpp.llama_vocab_n_tokens(vocab)
        buf = llama_cpp.ctypes.create_string_buffer(64)
        for token in range(n):
            size = llama_cpp.llama_token_to_piece(vocab, token, buf, 64, 0, True)
            piece = buf.raw[:size]
            if len(piece) == 1 and piece[0] not in _TOKENS:
                _TOKENS[piece[0]] = token
        _TOKENS["eos"] = llama_cpp.llama_vocab_eos(vocab)
    return _TOKENS


@pytest.mark.parametrize(("pattern", "good", "bad"), PATTERNS, ids=[p for p, _, _ in PATTERNS])
def test_pattern_translation_agrees_with_python_re(
    vocab: Any, pattern: str, good: list[str], bad: list[str]
) -> None:
    gbnf = grammar_for(pattern)
    assert compiles(vocab, gbnf), gbnf
    for text in good:
        assert re.search(pattern, text), text  # the table itself is right
        if "\n" not in text and all(ord(c) < 0x80 or c.isalpha() for c in text):
            assert accepts(vocab, gbnf, text), (pattern, text, gbnf)
    for text in bad:
        assert not accepts(vocab, gbnf, text), (pattern, text, gbnf)


@pytest.mark.parametrize(
    ("pattern", "what"),
    [
        (r"^(?=.*\d).+$", "lookarounds"),
        (r"^(a)\1$", "backreferences"),
        (r"^\bword$", "word boundaries"),
        (r"(?i)^abc$", "inline flags"),
        (r"^a$b", "'$' before the end"),
        (r"a^b", "'^' not at the start"),
        (r"^a++$", "possessive"),
        (r"^[", "invalid regular expression"),
    ],
)
def test_untranslatable_patterns_name_the_feature(pattern: str, what: str) -> None:
    with pytest.raises(UnsupportedSchemaError, match=re.escape(what)) as info:
        schema_to_gbnf(
            {"type": "object", "properties": {"p": {"type": "string", "pattern": pattern}}}
        )
    assert info.value.pointer == "#/properties/p/pattern"
    with pytest.raises(ValueError, match=re.escape(what)):
        pattern_gbnf(pattern)


@pytest.mark.parametrize(
    ("schema", "keyword", "pointer"),
    [
        ({"type": "array", "contains": {"type": "integer"}}, "contains", "#/contains"),
        ({"not": {"type": "null"}}, "not", "#/not"),
        (
            {"type": "object", "patternProperties": {"^x": {}}},
            "patternProperties",
            "#/patternProperties",
        ),
        ({"$ref": "https://example.com/s.json"}, "$ref", "#/$ref"),
        ({"$ref": "#/$defs/Missing"}, "$ref", "#/$ref"),
        ({"type": "number", "minimum": 0.5}, "minimum", "#/minimum"),
        ({"type": "string", "format": "uri"}, "format", "#/format"),
        ({"type": "integer", "multipleOf": 3}, "multipleOf", "#/multipleOf"),
        (
            {
                "oneOf": [
                    {"type": "object", "properties": {"a": {"type": "integer"}}},
                    {"type": "object"},
                ]
            },
            "oneOf",
            "#/oneOf",
        ),
        (
            {
                "$defs": {"X": {"type": "array", "items": {"type": "string"}, "uniqueItems": True}},
                "type": "object",
                "properties": {"x": {"$ref": "#/$defs/X"}},
            },
            "uniqueItems",
            "#/$defs/X/uniqueItems",
        ),
        ({"type": "no-such-type"}, "type", "#/type"),
    ],
)
def test_unsupported_keywords_are_named_with_their_place(
    schema: dict[str, Any], keyword: str, pointer: str
) -> None:
    with pytest.raises(UnsupportedSchemaError, match="cannot be turned into a grammar") as info:
        schema_to_gbnf(schema)
    assert (info.value.keyword, info.value.pointer) == (keyword, pointer)


@pytest.mark.parametrize(
    ("schema", "good", "bad"),
    [
        ({"type": "integer", "minimum": 0, "maximum": 120}, [0, 7, 99, 120], [-1, 121, 1000]),
        ({"type": "integer", "exclusiveMinimum": -5, "exclusiveMaximum": 5}, [-4, 0, 4], [-5, 5]),
        ({"type": "integer", "minimum": 95, "maximum": 1234}, [95, 100, 999, 1234], [94, 1235]),
        ({"type": "integer", "minimum": 1}, [1, 10, 123456], [0, -1]),
        ({"type": "integer", "maximum": -3}, [-3, -40], [-2, 0, 5]),
        (
            {"type": "number", "minimum": 0, "maximum": 1},
            [0, 0.5, 1, "1.0"],
            [1.5, -0.1, 2, "1.01"],
        ),
        ({"type": "number", "exclusiveMinimum": 0}, [0.001, 3, 7.25], [0, "0.0", -1]),
        ({"type": "number", "minimum": -40, "exclusiveMaximum": 60}, [-40, -3.5, 59.99], [60, -41]),
        ({"type": "integer", "minimum": 0.5, "maximum": 3.7}, [1, 3], [0, 4]),
        # bounds past the 16 digits the grammar writes: looser ones change nothing...
        ({"type": "number", "minimum": -1e20}, [0, -5, 12.5], ["-", "."]),
        ({"type": "integer", "minimum": -(2**70), "maximum": 10**30}, [0, -99, 7], ["-"]),
        ({"type": "number", "maximum": 1e300}, [1, -3.25], ["1e"]),
        # ...and the largest enforceable bound still leaves a valid number
        (
            {"type": "number", "minimum": 1e15},
            ["1000000000000000", "1000000000000001.5"],
            ["5", "", "999999999999999"],
        ),
    ],
)
def test_numeric_bounds_are_exact(
    vocab: Any, schema: dict[str, Any], good: list[Any], bad: list[Any]
) -> None:
    gbnf = schema_to_gbnf(schema)
    for value in good:
        text = value if isinstance(value, str) else json.dumps(value)
        jsonschema.validate(json.loads(text), schema)
        assert _feed_raw(vocab, gbnf, text), (schema, text)
    for value in bad:
        text = value if isinstance(value, str) else json.dumps(value)
        assert not _feed_raw(vocab, gbnf, text), (schema, text)


def _feed_raw(vocab: Any, gbnf: str, text: str) -> bool:
    sampler = llama_cpp.llama_sampler_init_grammar(vocab, gbnf.encode(), b"root")
    assert sampler
    try:
        return _feed(vocab, sampler, text)
    finally:
        llama_cpp.llama_sampler_free(sampler)


@pytest.mark.parametrize(
    ("schema", "keyword"),
    [
        ({"type": "number", "minimum": 1e16}, "minimum"),
        ({"type": "number", "minimum": 1e300}, "minimum"),
        ({"type": "integer", "minimum": 10**18}, "minimum"),
        ({"type": "integer", "exclusiveMinimum": 2**70}, "exclusiveMinimum"),
        ({"type": "number", "maximum": -1e20}, "maximum"),
        ({"type": "integer", "exclusiveMaximum": -(2**63)}, "exclusiveMaximum"),
        ({"type": "integer", "minimum": 5, "maximum": 3}, "maximum"),
        ({"type": "number", "exclusiveMinimum": 2, "exclusiveMaximum": 2}, "exclusiveMaximum"),
    ],
)
def test_bounds_no_grammar_can_meet_name_their_own_keyword(
    schema: dict[str, Any], keyword: str
) -> None:
    """Never an empty alternative (``{"x": }`` once passed as valid), never a wrong keyword."""
    wrapped = {"type": "object", "properties": {"x": schema}, "required": ["x"]}
    with pytest.raises(UnsupportedSchemaError) as caught:
        schema_to_gbnf(wrapped)
    assert caught.value.keyword == keyword
    assert caught.value.pointer == f"#/properties/x/{keyword}"


@pytest.mark.parametrize(
    ("schema", "keyword"),
    [
        ({"type": "string", "maxLength": 5000}, "maxLength"),
        ({"type": "string", "minLength": 2001}, "minLength"),
        ({"type": "array", "items": {"type": "integer"}, "maxItems": 10_000}, "maxItems"),
        (
            {"type": "object", "additionalProperties": {"type": "integer"}, "maxProperties": 3000},
            "maxProperties",
        ),
        ({"type": "string", "pattern": "^[a-c]{10000}$"}, "pattern"),
        ({"type": "string", "pattern": "^x{1,2001}$"}, "pattern"),
    ],
)
def test_counts_past_the_grammar_engine_are_named_not_dropped(
    schema: dict[str, Any], keyword: str
) -> None:
    """llama.cpp drops an upper bound over 2000 repetitions silently: refuse it by name."""
    with pytest.raises(UnsupportedSchemaError) as caught:
        schema_to_gbnf({"type": "object", "properties": {"x": schema}, "required": ["x"]})
    assert caught.value.keyword == keyword


def test_counts_at_the_limit_still_convert(vocab: Any) -> None:
    gbnf = schema_to_gbnf({"type": "string", "maxLength": 2000})
    assert compiles(vocab, gbnf)
    assert _feed_raw(vocab, gbnf, json.dumps("a" * 2000))
    assert not _feed_raw(vocab, gbnf, json.dumps("a" * 2001))
