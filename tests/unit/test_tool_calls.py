"""Tool calls: format detection, the streaming parser, and grammars that force valid calls."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import llama_cpp
import pytest

from local_llm_runtime.errors import InvalidOptionError, LocalLLMError
from local_llm_runtime.prompt.tool_calls import (
    ToolCall,
    ToolCallParser,
    ToolFormat,
    detect_tool_format,
    json_schema_gbnf,
    parse_tool_calls,
    tool_call_gbnf,
)

DATA = Path(__file__).resolve().parents[1] / "data"
NAMES = {"get_weather", "add"}
Event = str | tuple[str, dict[str, Any]]


def normalized(events: list[str | ToolCall]) -> list[Event]:
    """Merge adjacent text, and compare calls by name and arguments (ids are random)."""
    out: list[Event] = []
    for event in events:
        if isinstance(event, ToolCall):
            out.append((event.name, event.arguments))
        elif out and isinstance(out[-1], str):
            out[-1] += event
        elif event:
            out.append(event)
    return out


def parse_chunks(fmt: ToolFormat, chunks: list[str], names: set[str] = NAMES) -> list[Event]:
    parser = ToolCallParser(fmt, names)
    events: list[str | ToolCall] = []
    for chunk in chunks:
        events += parser.feed(chunk)
    return normalized(events + parser.finish(ended_naturally=True))


def chunkings(text: str, seed: int = 0) -> Iterator[list[str]]:
    """Char by char, every split in two, and random chunkings."""
    yield list(text)
    for i in range(1, len(text)):
        yield [text[:i], text[i:]]
    rng = random.Random(seed)
    for _ in range(30):
        cuts = sorted(rng.sample(range(1, len(text)), k=min(len(text) - 1, rng.randint(2, 12))))
        yield [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]


WEATHER = ("get_weather", {"location": "Paris"})
ADD = ("add", {"a": 1, "b": 2})

CASES: list[tuple[ToolFormat, str, list[Event]]] = [
    (
        "hermes",
        'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"location": "Paris"}}\n'
        '</tool_call>\n<tool_call>\n{"name": "add", "parameters": {"a": 1, "b": 2}}\n</tool_call>\n'
        "Done: <b>ok</b> [x]",
        ["Let me check.", WEATHER, ADD, "Done: <b>ok</b> [x]"],
    ),
    (
        "hermes",
        '<tool_call>\n{"name": "get_weather", "arguments": "{\\"location\\": \\"Paris\\"}"}\n</tool_call>',
        [WEATHER],
    ),
    (  # invalid JSON and unknown tool come back as text; a missing closing tag is fine
        "hermes",
        'A <tool_call>{"name": "rm_rf", "arguments": {}}</tool_call> B\n<tool_call>{oops}</tool_call>'
        '\n<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n',
        [
            'A <tool_call>{"name": "rm_rf", "arguments": {}}</tool_call> B\n<tool_call>{oops}</tool_call>',
            ADD,
        ],
    ),
    ("hermes", "Plain answer, <tool_ but no call.\n", ["Plain answer, <tool_ but no call.\n"]),
    # small models (the demo Qwen2.5-Coder-0.5B) skip the tags: bare or fenced JSON at the start
    ("hermes", '{"name": "get_weather", "arguments": {"location": "Paris"}}', [WEATHER]),
    (
        "hermes",
        '\n```json\n{\n  "name": "get_weather",\n  "arguments": {\n    "location": "Paris"\n  }\n}\n```\n'
        '<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call>',
        [WEATHER, ADD],
    ),
    ("hermes", "```python\nprint({'a': 1})\n```", ["```python\nprint({'a': 1})\n```"]),
    ("hermes", '```json\n{"a": [1, "}"]}\n``` ok', ['```json\n{"a": [1, "}"]}\n``` ok']),
    ("hermes", "`x` is {a variable}", ["`x` is {a variable}"]),
    (
        "hermes",
        'Use {"name": "add", "arguments": {"a": 1, "b": 2}}',
        ['Use {"name": "add", "arguments": {"a": 1, "b": 2}}'],
    ),
    ("hermes", '{"name": "nope", "arguments": {}} {x}', ['{"name": "nope", "arguments": {}} {x}']),
    (
        "mistral",
        'Sure [1] [TOOL_CALLS] [{"name": "get_weather", "arguments": {"location": "Paris"}}, '
        '{"name": "add", "arguments": "{\\"a\\": 1, \\"b\\": 2}"}] then',
        ["Sure [1]", WEATHER, ADD, "then"],
    ),
    (
        "mistral",
        '[TOOL_CALLS]get_weather[ARGS]{"location": "Paris"}[TOOL_CALLS]add[CALL_ID]abc123XYZ'
        '[ARGS]{"a": 1, "b": 2}',
        [WEATHER, ADD],
    ),
    (  # [TOOL_CALLS] is a control token: detokenized output may lack it
        "mistral",
        ' [{"name": "get_weather", "arguments": {"location": "Paris"}}]',
        [WEATHER],
    ),
    (
        "mistral",
        '[TOOL_CALLS][{"name": "nope", "arguments": {}}] [TOOL_CALLS]not a call',
        ['[TOOL_CALLS][{"name": "nope", "arguments": {}}] [TOOL_CALLS]not a call'],
    ),
    ("mistral", "[Note] plain text.", ["[Note] plain text."]),
    (
        "llama3",
        ' <|python_tag|>{"name": "get_weather", "parameters": {"location": "Paris"}}; '
        '{"name": "add", "arguments": {"a": 1, "b": 2}}\nThat is all.',
        [WEATHER, ADD, "That is all."],
    ),
    (
        "llama3",
        '\n{"name": "get_weather", "parameters": {"location": "Paris"}}\n',
        [WEATHER],
    ),
    (  # not at the start of the output: plain text
        "llama3",
        'Call it like {"name": "add", "parameters": {"a": 1, "b": 2}}',
        ['Call it like {"name": "add", "parameters": {"a": 1, "b": 2}}'],
    ),
    (
        "llama3",
        '{"name": "add", "parameters": {"a": 1,',
        ['{"name": "add", "parameters": {"a": 1,'],
    ),
    ("llama3", '{"name": "nope", "parameters": {}}', ['{"name": "nope", "parameters": {}}']),
]


@pytest.mark.parametrize(("fmt", "text", "expected"), CASES)
def test_parser_same_result_for_every_chunking(
    fmt: ToolFormat, text: str, expected: list[Event]
) -> None:
    assert parse_chunks(fmt, [text]) == expected
    for chunks in chunkings(text):
        assert parse_chunks(fmt, chunks) == expected, chunks


@pytest.mark.parametrize(("fmt", "text", "expected"), CASES)
def test_parse_tool_calls_convenience(fmt: ToolFormat, text: str, expected: list[Event]) -> None:
    plain, calls = parse_tool_calls(fmt, text, NAMES, ended_naturally=True)
    assert plain == "".join(e for e in expected if isinstance(e, str))
    assert [(c.name, c.arguments) for c in calls] == [e for e in expected if isinstance(e, tuple)]


def test_text_streams_with_minimal_delay_and_markers_never_leak() -> None:
    parser = ToolCallParser("hermes", NAMES)
    assert parser.feed("Hello wor") == ["Hello wor"]
    assert parser.feed("ld. <tool") == ["ld."]  # " <tool" could begin a marker
    assert parser.feed("_call>\n{") == []
    assert parser.feed('"name": "add", "arguments": {}}\n</tool_') == []
    [call] = parser.feed("call>")
    assert isinstance(call, ToolCall)
    assert (call.name, call.arguments) == ("add", {})
    assert parser.feed("\n") == []  # whitespace after a call is dropped
    assert parser.feed(" bye") == ["bye"]
    assert parser.finish(ended_naturally=True) == []


def test_llama3_buffers_only_at_the_start() -> None:
    parser = ToolCallParser("llama3", NAMES)
    assert parser.feed("  ") == []
    assert parser.feed("<|py") == []
    assert parser.feed("thon") == []
    assert parser.feed("?") == ["  <|python?"]
    assert parser.feed(' {"name": "add"}') == [' {"name": "add"}']


def test_tool_call_ids_are_fresh() -> None:
    _, calls = parse_tool_calls(
        "hermes",
        '<tool_call>{"name": "add", "arguments": {}}</tool_call>' * 2,
        NAMES,
        ended_naturally=True,
    )
    assert len(calls) == 2
    assert all(re.fullmatch(r"call_[0-9a-f]{24}", c.id) for c in calls)
    assert calls[0].id != calls[1].id


def test_unknown_format_is_refused() -> None:
    with pytest.raises(InvalidOptionError):
        ToolCallParser("xml", NAMES)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("source", "fmt"),
    [
        ((DATA / "qwen2.5_chat_template.jinja").read_text(), "hermes"),
        ((DATA / "llama3.1_chat_template.jinja").read_text(), "llama3"),
        ((DATA / "mistral_v3_chat_template.jinja").read_text(), "mistral"),
        ("{{ 'Environment: ipython' }}", "llama3"),
        ("{{ messages }}", "hermes"),
        (None, "hermes"),
    ],
)
def test_detect_tool_format(source: str | None, fmt: ToolFormat) -> None:
    assert detect_tool_format(source) == fmt


# -- grammars: they compile in llama.cpp, and they force valid calls out of a random model

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather.",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string", "maxLength": 12},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["location", "unit"],
        },
    },
}
ADD_TOOL = {
    "type": "function",
    "function": {
        "name": "add",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
        },
    },
}
TOOLS = [WEATHER_TOOL, ADD_TOOL]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}


def check(value: Any, schema: dict[str, Any]) -> None:
    """A small JSON-schema check covering what the test schemas use."""
    if "enum" in schema:
        assert value in schema["enum"]
    kind = schema.get("type")
    if kind == "object":
        assert isinstance(value, dict)
        assert set(schema.get("required", [])) <= set(value)
        for key, sub in value.items():
            assert key in schema["properties"]
            check(sub, schema["properties"][key])
    elif kind == "string":
        assert isinstance(value, str)
        assert len(value) <= schema.get("maxLength", len(value))
    elif kind == "integer":
        assert isinstance(value, int)
        assert not isinstance(value, bool)


@pytest.fixture(scope="module")
def llm(tiny_gguf: Path) -> Iterator[llama_cpp.Llama]:
    model = llama_cpp.Llama(model_path=str(tiny_gguf), n_ctx=2048, verbose=False)
    yield model
    model.close()


def compiles(llm: llama_cpp.Llama, gbnf: str) -> bool:
    """Parse the grammar with llama.cpp itself (``LlamaGrammar.from_string`` only stores it)."""
    llama_cpp.LlamaGrammar.from_string(gbnf, verbose=False)
    sampler = llama_cpp.llama_sampler_init_grammar(llm._model.vocab, gbnf.encode(), b"root")
    if not sampler:
        return False
    llama_cpp.llama_sampler_free(sampler)
    return True


def generate(llm: llama_cpp.Llama, gbnf: str, seed: int) -> tuple[str, str]:
    out = llm.create_completion(
        "Call a tool:",
        grammar=llama_cpp.LlamaGrammar.from_string(gbnf, verbose=False),
        max_tokens=400,
        temperature=1.0,
        seed=seed,
    )
    choice = out["choices"][0]  # type: ignore[index]
    return choice["text"], choice["finish_reason"]


def test_a_broken_grammar_does_not_compile(llm: llama_cpp.Llama) -> None:
    assert not compiles(llm, 'root ::= "a" undefined-rule')


@pytest.mark.parametrize("fmt", ["hermes", "mistral", "llama3"])
@pytest.mark.parametrize("name", [None, "get_weather"])
def test_forced_call_is_always_valid(
    llm: llama_cpp.Llama, fmt: ToolFormat, name: str | None
) -> None:
    gbnf = tool_call_gbnf(fmt, TOOLS, name=name)
    assert compiles(llm, gbnf)
    seen = set()
    for seed in range(4):
        text, finish = generate(llm, gbnf, seed)
        assert finish == "stop", text
        plain, calls = parse_tool_calls(fmt, text, NAMES, ended_naturally=True)
        assert plain == "", text
        assert len(calls) == 1, text
        assert name is None or calls[0].name == name
        check(calls[0].arguments, SCHEMAS[calls[0].name])
        seen.add(calls[0].name)
    if fmt == "hermes":
        assert text.startswith("<tool_call>\n") and text.endswith("\n</tool_call>")
    if fmt == "mistral":
        assert text.startswith("[TOOL_CALLS][")
    if fmt == "llama3":
        assert '"parameters"' in text


@pytest.mark.parametrize("fmt", ["hermes", "mistral", "llama3"])
def test_parallel_forced_calls_are_valid(llm: llama_cpp.Llama, fmt: ToolFormat) -> None:
    gbnf = tool_call_gbnf(fmt, TOOLS, parallel=True)
    assert compiles(llm, gbnf)
    stopped = 0
    for seed in range(8):
        text, finish = generate(llm, gbnf, seed)
        if finish != "stop":  # a random model may go on calling until max_tokens
            continue
        stopped += 1
        plain, calls = parse_tool_calls(fmt, text, NAMES, ended_naturally=True)
        assert plain == "", text
        assert calls, text
        for call in calls:
            check(call.arguments, SCHEMAS[call.name])
    assert stopped >= 2


def test_schemas_with_defs_of_the_same_name_do_not_collide(llm: llama_cpp.Llama) -> None:
    def tool(name: str, item: dict[str, Any]) -> dict[str, Any]:
        params = {
            "type": "object",
            "properties": {"item": {"$ref": "#/$defs/Item"}},
            "required": ["item"],
            "$defs": {"Item": item},
        }
        return {"type": "function", "function": {"name": name, "parameters": params}}

    tools = [
        tool("color", {"type": "string", "enum": ["red", "blue"]}),
        tool(
            "count", {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
        ),
    ]
    gbnf = tool_call_gbnf("hermes", tools)
    assert compiles(llm, gbnf)
    for seed in range(6):
        text, _ = generate(llm, gbnf, seed)
        _, [call] = parse_tool_calls("hermes", text, {"color", "count"}, ended_naturally=True)
        item = call.arguments["item"]
        if call.name == "color":
            assert item in ("red", "blue")
        else:
            assert isinstance(item, dict) and isinstance(item["n"], int)


def test_json_schema_grammar(llm: llama_cpp.Llama) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 10}, "n": {"type": "integer"}},
        "required": ["city", "n"],
    }
    for gbnf, validate in ((json_schema_gbnf(schema), True), (json_schema_gbnf(None), False)):
        assert compiles(llm, gbnf)
        stopped = 0
        for seed in range(4):
            text, finish = generate(llm, gbnf, seed)
            if finish != "stop":  # any JSON object may go on until max_tokens
                continue
            stopped += 1
            value = json.loads(text)  # strict JSON: no raw control characters
            assert isinstance(value, dict)
            if validate:
                check(value, schema)
        assert stopped >= 1


def test_grammar_errors_are_typed() -> None:
    with pytest.raises(InvalidOptionError, match="no tool named 'nope'") as info:
        tool_call_gbnf("hermes", TOOLS, name="nope")
    assert isinstance(info.value, LocalLLMError)
    assert isinstance(info.value, ValueError)
    with pytest.raises(InvalidOptionError):
        tool_call_gbnf("hermes", [])
    with pytest.raises(InvalidOptionError, match="cannot be turned into a grammar"):
        json_schema_gbnf({"type": "no-such-type"})
    with pytest.raises(InvalidOptionError):
        json_schema_gbnf({"$ref": "https://example.com/schema.json"})  # never fetched


@pytest.mark.parametrize("fmt", ["hermes", "mistral", "llama3"])
def test_a_forced_call_of_a_tool_without_parameters_has_exactly_no_arguments(
    llm: llama_cpp.Llama, fmt: ToolFormat
) -> None:
    gbnf = tool_call_gbnf(fmt, [{"type": "function", "function": {"name": "now"}}])
    assert compiles(llm, gbnf)
    for seed in range(3):
        text, _ = generate(llm, gbnf, seed)
        _, [call] = parse_tool_calls(fmt, text, {"now"}, ended_naturally=True)
        assert (call.name, call.arguments) == ("now", {})


def test_parallel_bare_calls_after_a_call_are_calls() -> None:
    """Qwen2.5-Coder-0.5B writes parallel calls as JSON objects after the first one."""
    from local_llm_runtime.prompt.tool_calls import parse_tool_calls

    text = '<tool_call>\n{"name": "a", "arguments": {}}\n</tool_call>,\n{"name": "b", "arguments": {"x": 1}}'
    plain, calls = parse_tool_calls("hermes", text, ["a", "b"], ended_naturally=True)
    assert plain == ""
    assert [(c.name, c.arguments) for c in calls] == [("a", {}), ("b", {"x": 1})]
    plain, calls = parse_tool_calls(
        "hermes",
        '{"name": "a", "arguments": {}}\n{"name": "b", "arguments": {}}\nDone.',
        ["a", "b"],
        ended_naturally=True,
    )
    assert (plain, [c.name for c in calls]) == ("Done.", ["a", "b"])


@pytest.mark.parametrize(
    ("fmt", "text"),
    [
        ("hermes", '<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}\n</tool_call>'),
        ("hermes", '<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}'),
        ("hermes", '{"name": "add", "arguments": {"a": 1, "b": 2}'),
        ("hermes", '{"name": "add", "arguments": {"a": 1, "b": 2'),
        ("llama3", '{"name": "add", "parameters": {"a": 1, "b": 2}'),
    ],
)
def test_a_call_short_of_its_closing_brackets_is_completed(fmt: str, text: str) -> None:
    plain, calls = parse_tool_calls(fmt, text, NAMES, ended_naturally=True)  # type: ignore[arg-type]
    assert plain == ""
    assert [(c.name, c.arguments) for c in calls] == [("add", {"a": 1, "b": 2})]


@pytest.mark.parametrize(
    "text",
    [
        '{"name": "add", "arguments": {"a": 1, "b": "2',  # unterminated string
        '{"name": "add", "arguments": {"a": [1, {"b": 2',  # three brackets short
        '{"name": "multiply", "arguments": {"a": 1}',  # not an offered tool
        '{"name": "add", "arguments": {"a": 1]',  # brackets that do not nest
        '{"name": "add", "arguments": 5',  # arguments not an object
    ],
)
def test_only_a_missing_closing_bracket_is_repaired(text: str) -> None:
    plain, calls = parse_tool_calls("hermes", text, NAMES, ended_naturally=True)
    assert calls == [] and plain == text


def test_no_repair_for_an_output_cut_by_the_token_limit() -> None:
    from local_llm_runtime.prompt.tool_calls import ToolCallParser

    text = '{"name": "add", "arguments": {"a": 1, "b": 2'
    parser = ToolCallParser("hermes", NAMES)
    events = parser.feed(text) + parser.finish(ended_naturally=False)
    assert normalized(events) == [text]  # maybe "b": 23 was coming: not a call


def test_a_repaired_call_must_state_its_arguments() -> None:
    plain, calls = parse_tool_calls("hermes", '{"name": "add"', NAMES, ended_naturally=True)
    assert calls == [] and plain == '{"name": "add"'


# A syntax's own markers inside an argument string are argument text, not markers.
MARKERS_IN_ARGUMENTS = [
    ("hermes", '<tool_call>\n{"name": "get_weather", "arguments": {"city": "<tool_call>"}}\n</tool_call>'),
    ("hermes", '<tool_call>{"name": "get_weather", "arguments": {"city": "a</tool_call>b"}}</tool_call>'),
    ("hermes", '<tool_call>{"name": "get_weather", "arguments": {"city": "q\\"</tool_call>"}}</tool_call>'),
    ("mistral", '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "[TOOL_CALLS]"}}]'),
    ("llama3", '{"name": "get_weather", "parameters": {"city": "<|python_tag|>}"}}'),
]  # fmt: skip


@pytest.mark.parametrize(("fmt", "text"), MARKERS_IN_ARGUMENTS)
def test_markers_inside_argument_strings_are_text(fmt: ToolFormat, text: str) -> None:
    (call,) = parse_chunks(fmt, [text])
    assert isinstance(call, tuple) and call[0] == "get_weather", call
    city = json.loads(text[text.index("{") : text.rindex("}") + 1])
    expected = (city.get("arguments") or city.get("parameters"))["city"]
    assert call[1] == {"city": expected}
    for chunks in chunkings(text):
        assert parse_chunks(fmt, chunks) == [call], chunks
