"""Agents never receive a wrong tool call (issue 8, section 2), on the real engine.

* A call cut short (token limit, cancel) is text, never a call: swept over every
  cut point, on every path (aggregate, stream, async, batched, both adapters).
* Arguments that do not validate against the tool's (closed) JSON schema are
  flagged: ``ToolCall.error``, ``ChatResult.invalid_tool_calls``, LangChain
  ``invalid_tool_calls`` (also after ``+`` of streamed chunks), a LlamaIndex error.
* Tool dicts in every shape clients send go through one normaliser.

The tiny GGUF writes random text, so its output is forced with a grammar: a
``format`` whose schema is one ``const`` makes it write exactly the call below
(with tools offered and ``tool_choice="auto"`` the parser reads it as a call).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from local_llm_runtime import InvalidOptionError, InvalidToolCallError, RuntimeSettings
from local_llm_runtime.llama.engine import Engine
from local_llm_runtime.prompt.tool_calls import parse_tool_calls
from local_llm_runtime.prompt.tool_schema import (
    closed_schema,
    normalize_tools,
    tool_schemas,
    validate_arguments,
)
from local_llm_runtime.types import ChatResult, ToolCallDelta, aggregate
from tests.support.events import SetAfter

PAY = {
    "type": "function",
    "function": {
        "name": "pay",
        "description": "Pay an amount.",
        "parameters": {
            "type": "object",
            "properties": {"amount": {"type": "integer"}},
            "required": ["amount"],
        },
    },
}
NOW = {"type": "function", "function": {"name": "now", "description": "The time now."}}
CALL = {"name": "pay", "arguments": {"amount": 1000}}
ECHO = {"name": "now", "arguments": {"properties": {}, "type": "object"}}  # schema echoed
MESSAGES = [{"role": "user", "content": "pay"}]
GREEDY = {"temperature": 0.0, "seed": 1}


def forced(value: dict[str, Any]) -> dict[str, Any]:
    """A ``format`` that makes the model write exactly ``json.dumps(value)``."""
    return {"const": value}


@pytest.fixture
def engine() -> Iterator[Engine]:
    eng = Engine()
    yield eng
    eng.pool.close()


@pytest.fixture
def batched(monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    monkeypatch.setenv("LOCAL_LLM_NUM_PARALLEL", "2")
    eng = Engine(RuntimeSettings.from_env())
    yield eng
    eng.pool.close()


# ---- the parser: repair only for output that ended by itself ------------------------

FULL_CALLS = {
    "hermes-tagged": ("hermes", '<tool_call>\n{"name": "pay", "arguments": {"amount": 1000}}\n</tool_call>'),
    "hermes-bare": ("hermes", '{"name": "pay", "arguments": {"amount": 1000}}'),
    "llama3": ("llama3", '{"name": "pay", "parameters": {"amount": 1000}}'),
    "mistral-list": ("mistral", '[TOOL_CALLS][{"name": "pay", "arguments": {"amount": 1000}}]'),
    "mistral-args": ("mistral", '[TOOL_CALLS]pay[ARGS]{"amount": 1000}'),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(FULL_CALLS))
def test_a_call_cut_anywhere_is_never_a_call(case: str) -> None:
    fmt, text = FULL_CALLS[case]
    _, [whole] = parse_tool_calls(fmt, text, {"pay"}, ended_naturally=True)  # type: ignore[arg-type]
    assert whole.arguments == {"amount": 1000}
    for cut in range(1, len(text)):
        plain, calls = parse_tool_calls(fmt, text[:cut], {"pay"}, ended_naturally=False)  # type: ignore[arg-type]
        assert [c.arguments for c in calls] in ([], [{"amount": 1000}]), text[:cut]
        if not calls:
            assert plain == text[:cut]  # nothing dropped: the cut call is text


def test_the_model_ending_its_own_call_short_is_still_repaired() -> None:
    """The repair is for small models that stop one bracket short, by themselves."""
    text = '{"name": "pay", "arguments": {"amount": 100}'
    assert parse_tool_calls("hermes", text, {"pay"}, ended_naturally=True)[1][0].arguments == {
        "amount": 100
    }
    assert parse_tool_calls("hermes", text, {"pay"}, ended_naturally=False)[1] == []


# ---- one normal form for tool dicts ---------------------------------------------------

OBJ = {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}
EMPTY = {"type": "object", "properties": {}}
SHAPES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "no parameters": ({"name": "t"}, EMPTY),
    "parameters None": ({"name": "t", "parameters": None}, EMPTY),
    "parameters {}": ({"name": "t", "parameters": {}}, EMPTY),
    "type object only": ({"name": "t", "parameters": {"type": "object"}}, EMPTY),
    "required None": (
        {"name": "t", "parameters": {"type": "object", "properties": {}, "required": None}},
        EMPTY,
    ),
    "required [] ": (
        {"name": "t", "parameters": {"type": "object", "properties": {}, "required": []}},
        {**EMPTY, "required": []},
    ),
    "properties None": (
        {"name": "t", "parameters": {"type": "object", "properties": None, "required": None}},
        EMPTY,
    ),
    "nested required None": (
        {
            "name": "t",
            "parameters": {
                "type": "object",
                "properties": {"o": {"type": "object", "properties": {}, "required": None}},
            },
        },
        {"type": "object", "properties": {"o": {"type": "object", "properties": {}}}},
    ),
    "with properties": ({"name": "t", "parameters": OBJ}, OBJ),
    "anthropic input_schema": ({"name": "t", "input_schema": OBJ}, OBJ),
    "mcp inputSchema": ({"name": "t", "inputSchema": OBJ}, OBJ),
    "mcp inputSchema None": ({"name": "t", "inputSchema": None}, EMPTY),
    "no type": ({"name": "t", "parameters": {"properties": OBJ["properties"]}}, {
        "properties": OBJ["properties"], "type": "object"}),
}  # fmt: skip


@pytest.mark.parametrize("wrapped", [True, False], ids=["openai", "bare-function"])
@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_tool_dicts_are_normalised(shape: str, wrapped: bool) -> None:
    function, parameters = SHAPES[shape]
    tool = {"type": "function", "function": function} if wrapped else function
    [out] = normalize_tools([tool])
    assert out == {"type": "function", "function": {"name": "t", "parameters": parameters}}


def test_a_schema_given_twice_is_refused() -> None:
    with pytest.raises(InvalidOptionError, match="twice"):
        normalize_tools([{"name": "t", "parameters": OBJ, "input_schema": EMPTY}])


def test_an_anthropic_tool_forced_call_validates_its_required_field(
    engine: Engine, tiny_gguf: Path
) -> None:
    """Its schema is not dropped: the grammar and the check both see ``amount``."""
    tool = {"name": "pay", "input_schema": PAY["function"]["parameters"]}
    result = engine.chat(
        str(tiny_gguf),
        MESSAGES,
        tools=[tool],
        tool_choice="pay",
        options={**GREEDY, "num_predict": 400},
    )
    assert result.tool_calls, result
    for call in result.tool_calls:
        assert call.name == "pay" and isinstance(call.arguments.get("amount"), int)
    assert all(c.error for c in result.invalid_tool_calls)


# ---- the argument check ---------------------------------------------------------------

DEFS = {
    "type": "object",
    "properties": {"item": {"$ref": "#/$defs/Item"}},
    "required": ["item"],
    "$defs": {"Item": {"type": "object", "properties": {"n": {"type": "integer"}}}},
}
OPEN = {"type": "object", "properties": {"a": {"type": "integer"}}, "additionalProperties": True}
ALL_OF = {
    "allOf": [
        {"type": "object", "properties": {"a": {"type": "integer"}}},
        {"type": "object", "properties": {"b": {"type": "integer"}}},
    ]
}
VALIDATION: list[tuple[str, dict[str, Any], dict[str, Any], str | None]] = [
    ("empty ok", EMPTY, {}, None),
    ("schema echoed to a tool without parameters", EMPTY, ECHO["arguments"], "Additional"),
    ("ok", OBJ, {"q": "x"}, None),
    ("missing required", OBJ, {}, "'q' is a required property"),
    ("wrong type", OBJ, {"q": 5}, "5 is not of type 'string'"),
    ("unknown name", OBJ, {"q": "x", "r": 1}, "Additional properties"),
    ("open schema takes other names", OPEN, {"a": 1, "z": 2}, None),
    ("nested $defs ok", DEFS, {"item": {"n": 1}}, None),
    ("nested $defs closed", DEFS, {"item": {"n": 1, "m": 2}}, "Additional properties"),
    ("nested $defs wrong type", DEFS, {"item": {"n": "1"}}, "at 'item/n'"),
    ("allOf branches are not closed one by one", ALL_OF, {"a": 1, "b": 2}, None),
    ("type object only: no arguments", normalize_tools([{"name": "t",
        "parameters": {"type": "object"}}])[0]["function"]["parameters"], {"x": 1}, "Additional"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("schema", "args", "error"), [case[1:] for case in VALIDATION], ids=[c[0] for c in VALIDATION]
)
def test_arguments_are_checked_against_the_closed_schema(
    schema: dict[str, Any], args: dict[str, Any], error: str | None
) -> None:
    found = validate_arguments(closed_schema(schema), args)
    if error is None:
        assert found is None
    else:
        assert found is not None and error in found
    text = json.dumps({"name": "t", "arguments": args})
    _, [call] = parse_tool_calls(
        "hermes", text, {"t"}, ended_naturally=True, schemas={"t": closed_schema(schema)}
    )
    assert call.error == found


# ---- the engine: every path, every cut point ---------------------------------------


def _chat(engine: Engine, path: str, model: Path, **kwargs: Any) -> ChatResult:
    kwargs = {"tools": [PAY], "format": forced(CALL), **kwargs}
    if path == "aggregate":
        return engine.chat(str(model), MESSAGES, **kwargs)
    if path == "stream":
        return aggregate(list(engine.chat_stream(str(model), MESSAGES, **kwargs)))
    return asyncio.run(engine.achat(str(model), MESSAGES, **kwargs))


def _assert_never_wrong(result: ChatResult) -> None:
    calls = [(c.name, c.arguments) for c in result.tool_calls]
    assert calls in ([], [("pay", {"amount": 1000})]), result
    assert result.invalid_tool_calls == []
    if not calls:
        assert result.finish_reason in ("length", "cancelled")


@pytest.mark.parametrize("path", ["aggregate", "stream", "async", "batched"])
def test_a_cut_call_is_text_on_every_path(
    engine: Engine, batched: Engine, tiny_gguf: Path, path: str
) -> None:
    eng = batched if path == "batched" else engine
    mode = "aggregate" if path == "batched" else path
    probe = SetAfter(10**9)  # counts the engine's cancel checks of a whole run
    whole = _chat(eng, mode, tiny_gguf, options=GREEDY, cancel=probe)
    assert [(c.name, c.arguments) for c in whole.tool_calls] == [("pay", {"amount": 1000})]
    assert whole.finish_reason == "tool_calls" and whole.text == ""
    n = whole.usage.completion_tokens
    by_limit = by_cancel = 0
    for k in range(1, n):  # the token limit cuts at every token
        result = _chat(eng, mode, tiny_gguf, options={**GREEDY, "num_predict": k})
        assert result.finish_reason == "length"
        _assert_never_wrong(result)  # a call only once the model closed its JSON itself
        by_limit += result.text.endswith('"amount": 100')
    for checks in range(1, probe.checks + 1):  # a cancel at every check: prompt, each token
        result = _chat(eng, mode, tiny_gguf, options=GREEDY, cancel=SetAfter(checks))
        _assert_never_wrong(result)
        by_cancel += result.finish_reason == "cancelled" and result.text.endswith('"amount": 100')
    assert by_limit == 1  # the case of the issue was met: cut inside the number...
    if path != "batched":  # (the batch decoder checks from its own thread: timing decides)
        assert by_cancel >= 1  # ...by the limit and by a cancel


def test_invalid_arguments_are_flagged_not_run(engine: Engine, tiny_gguf: Path) -> None:
    result = engine.chat(
        str(tiny_gguf), MESSAGES, tools=[NOW, PAY], format=forced(ECHO), options=GREEDY
    )
    assert result.tool_calls == []
    [bad] = result.invalid_tool_calls
    assert (bad.name, bad.arguments) == ("now", ECHO["arguments"])
    assert bad.error is not None and "Additional properties" in bad.error
    chunks = list(
        engine.chat_stream(
            str(tiny_gguf), MESSAGES, tools=[NOW], format=forced(ECHO), options=GREEDY
        )
    )
    [delta] = [c for c in chunks if isinstance(c, ToolCallDelta)]
    assert delta.error == bad.error


ENUM = {"type": "string", "enum": ["a", "bb"]}  # short: a random model's strings run long
TABLE_TOOLS: dict[str, dict[str, Any]] = {
    "no parameters": {"type": "function", "function": {"name": "t"}},
    "parameters None": {"type": "function", "function": {"name": "t", "parameters": None}},
    "required None": {"type": "function", "function": {"name": "t", "parameters": {
        "type": "object", "properties": {"q": ENUM}, "required": None}}},
    "required []": {"type": "function", "function": {"name": "t", "parameters": {
        "type": "object", "properties": {}, "required": []}}},
    "properties {}": {"type": "function", "function": {"name": "t", "parameters": EMPTY}},
    "additionalProperties false": {"type": "function", "function": {"name": "t", "parameters": {
        **OBJ, "properties": {"q": ENUM}, "additionalProperties": False}}},
    "additionalProperties true": {"type": "function", "function": {"name": "t", "parameters": {
        "type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"],
        "additionalProperties": True}}},
    "nested $defs": {"type": "function", "function": {"name": "t", "parameters": DEFS}},
    "bare function": {"name": "t", "parameters": {"type": "object", "required": None}},
}  # fmt: skip


@pytest.mark.parametrize("choice", ["required", "t", "auto"])
@pytest.mark.parametrize("shape", sorted(TABLE_TOOLS))
def test_tool_shapes_forced_and_auto(
    engine: Engine, tiny_gguf: Path, shape: str, choice: str
) -> None:
    tool = TABLE_TOOLS[shape]
    [normal] = normalize_tools([tool])
    schema = tool_schemas([normal])["t"]
    options = {"temperature": 0.0, "seed": 3, "num_predict": 300}
    result = engine.chat(
        str(tiny_gguf),
        MESSAGES,
        tools=[tool],
        tool_choice=choice,
        parallel_tool_calls=False,  # one call, then stop (a random model may go on calling)
        options=options,
    )
    counted = engine.count_chat_tokens(str(tiny_gguf), MESSAGES, tools=[tool])
    assert counted == result.usage.prompt_tokens
    if choice == "auto":  # random text: whatever comes is a valid call, a flagged one, or text
        for call in result.tool_calls:
            jsonschema.validate(call.arguments, schema)
        assert all(c.error for c in result.invalid_tool_calls)
        return
    assert result.finish_reason == "tool_calls", result
    [call] = result.tool_calls
    assert call.error is None and result.invalid_tool_calls == []
    jsonschema.validate(call.arguments, schema)
    if not normal["function"]["parameters"]["properties"]:
        assert call.arguments == {}


# ---- LangChain: invalid calls in invalid_tool_calls, invoke and stream (``+``) -------


def _lc_tool_calls(message: Any) -> list[tuple[str, dict[str, Any]]]:
    return [(c["name"], c["args"]) for c in message.tool_calls]


def test_langchain_invalid_call_is_an_invalid_tool_call(tiny_gguf: Path) -> None:
    from langchain_core.messages import AIMessage, AIMessageChunk

    from local_llm_integrations import ChatLocal

    llm = ChatLocal(model=str(tiny_gguf), format=forced(ECHO), **GREEDY).bind_tools([NOW, PAY])
    args = json.dumps(ECHO["arguments"])
    message = llm.invoke("what time is it?")
    assert isinstance(message, AIMessage)
    assert message.tool_calls == []
    [bad] = message.invalid_tool_calls
    assert (bad["name"], bad["args"], bad["type"]) == ("now", args, "invalid_tool_call")
    assert bad["error"] is not None and "Additional properties" in bad["error"]
    assert (
        asyncio.run(llm.ainvoke("what time is it?")).invalid_tool_calls[0]["error"]
        == (bad["error"])
    )

    chunks = list(llm.stream("what time is it?"))
    full = chunks[0]
    for chunk in chunks[1:]:
        full = full + chunk  # how LangChain and LangGraph aggregate a stream
    assert isinstance(full, AIMessageChunk)
    assert full.tool_calls == []
    [merged] = full.invalid_tool_calls
    assert merged["name"] == "now"
    assert args in str(merged["args"]) and "Additional properties" in str(merged["args"])
    [with_error] = [c for c in chunks if c.invalid_tool_calls]  # the chunk itself: plain + error
    assert with_error.invalid_tool_calls[0]["args"] == args
    assert with_error.invalid_tool_calls[0]["error"] == bad["error"]


def test_langchain_cut_call_never_reaches_tool_calls(tiny_gguf: Path) -> None:
    from langchain_core.messages import AIMessageChunk

    from local_llm_integrations import ChatLocal

    whole = ChatLocal(model=str(tiny_gguf), format=forced(CALL), **GREEDY).bind_tools([PAY])
    assert _lc_tool_calls(whole.invoke("pay")) == [("pay", {"amount": 1000})]
    for k in range(36, 46):  # around the number
        llm = ChatLocal(model=str(tiny_gguf), format=forced(CALL), num_predict=k, **GREEDY)
        bound = llm.bind_tools([PAY])
        message = bound.invoke("pay")
        assert _lc_tool_calls(message) == [] and message.invalid_tool_calls == []
        chunks = list(bound.stream("pay"))
        full = chunks[0] + chunks[1:] if len(chunks) > 1 else chunks[0]
        assert isinstance(full, AIMessageChunk) and full.tool_calls == []


# ---- LlamaIndex: a clear error, never a tool run with wrong arguments ---------------


def test_llama_index_invalid_call_raises_a_clear_error(tiny_gguf: Path) -> None:
    from llama_index.core.tools import FunctionTool

    from local_llm_integrations.llama_index import LocalLLM

    ran: list[str] = []

    def now() -> str:
        """The time now."""
        ran.append("now")
        return "12:00"

    tool = FunctionTool.from_defaults(fn=now)
    llm = LocalLLM(
        model=str(tiny_gguf), format=forced(ECHO), is_function_calling_model=True, **GREEDY
    )
    with pytest.raises(InvalidToolCallError, match=r"'now'.*Additional properties") as info:
        llm.predict_and_call([tool], "what time is it?")
    assert isinstance(info.value, ValueError) and info.value.tool_name == "now"
    response = llm.chat_with_tools([tool], "what time is it?")
    assert llm.get_tool_calls_from_response(response, error_on_no_tool_call=False) == []
    assert ran == []
    # forced, the grammar writes exactly {} for a tool without parameters: the tool runs
    out = llm.predict_and_call([tool], "what time is it?", tool_required=True)
    assert ran == ["now"] and str(out) == "12:00"
