"""The dialects' pure request builders and event parsers (recorded server answers)."""

from __future__ import annotations

import json

import pytest

from local_llm_runtime.remote import ollama_dialect as ollama
from local_llm_runtime.remote import openai_dialect as openai
from local_llm_runtime.remote.chunks import Assembler
from local_llm_runtime.types import FinalChunk, ReasoningDelta, TextDelta, ToolCallDelta, aggregate

TOOL = {
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
USER = [{"role": "user", "content": "2+3?"}]


@pytest.mark.parametrize(
    ("choice", "wire"),
    [
        ("required", "required"),
        ("any", "required"),
        ("none", "none"),
        ("add", {"type": "function", "function": {"name": "add"}}),
    ],
)
def test_openai_tool_choice_is_sent(choice: str, wire: object) -> None:
    body = openai.chat_body("m", USER, tools=[TOOL], tool_choice=choice)
    assert body["tool_choice"] == wire


def test_openai_body_options_usage_and_format() -> None:
    options = {"num_predict": 12, "num_ctx": 8192, "temperature": 0.1, "seed": 3, "stop": ["x"]}
    options |= {"min_p": 0.05, "repeat_penalty": 1.2, "typical_p": 0.9}
    body = openai.chat_body("m", USER, options=options, format={"type": "object"})
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["max_tokens"] == 12 and body["temperature"] == 0.1 and body["seed"] == 3
    assert body["stop"] == ["x"] and body["min_p"] == 0.05 and body["repeat_penalty"] == 1.2
    assert "num_ctx" not in body and "typical_p" not in body and "tool_choice" not in body
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["schema"] == {"type": "object"}
    assert openai.chat_body("m", USER, format="json")["response_format"] == {"type": "json_object"}


def test_ollama_never_sends_tool_choice() -> None:
    body = ollama.chat_body("m", USER, tools=[TOOL], options={"num_ctx": 8192}, keep_alive="5m")
    assert "tool_choice" not in body and body["tools"] == [TOOL]
    assert body["options"] == {"num_ctx": 8192} and body["keep_alive"] == "5m"


def test_assistant_tool_calls_are_wired_per_dialect() -> None:
    history = [
        *USER,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c1", "function": {"name": "add", "arguments": {"a": 2}}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "5"},
    ]
    wired = openai.wire_messages(history)
    assert json.loads(wired[1]["tool_calls"][0]["function"]["arguments"]) == {"a": 2}
    native = ollama.wire_messages(history)
    assert native[1]["tool_calls"][0]["function"]["arguments"] == {"a": 2}
    assert native[2]["tool_name"] == "add"


def sse_chunks(assembler: Assembler, events: list[dict[str, object]]) -> list[object]:
    out: list[object] = []
    for event in events:
        out += openai.apply_chat_event(assembler, event)
    return out + assembler.end()


def delta(**fields: object) -> dict[str, object]:
    return {"choices": [{"index": 0, "delta": fields, "finish_reason": None}]}


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_reasoning_field_names(field: str) -> None:
    chunks = sse_chunks(Assembler(model="m"), [delta(**{field: "hmm"}), delta(content="ok")])
    assert chunks[0] == ReasoningDelta("hmm") and chunks[1] == TextDelta("ok")


def test_think_tags_in_content_are_split() -> None:
    chunks = sse_chunks(
        Assembler(model="m"), [delta(content="<think>a</thi"), delta(content="nk>b")]
    )
    result = aggregate(chunks)  # type: ignore[arg-type]
    assert (result.reasoning, result.text) == ("a", "b")


def test_streamed_tool_call_fragments_are_assembled_and_validated() -> None:
    events = [
        delta(tool_calls=[{"index": 0, "id": "c1", "function": {"name": "add", "arguments": ""}}]),
        delta(tool_calls=[{"index": 0, "function": {"arguments": '{"a": 2,'}}]),
        delta(tool_calls=[{"index": 1, "id": "c2", "function": {"name": "add", "arguments": "{"}}]),
        delta(tool_calls=[{"index": 0, "function": {"arguments": ' "b": 3}'}}]),
        delta(tool_calls=[{"index": 1, "function": {"arguments": '"a": "x", "b": 1}'}}]),
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
        {"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 4}},
    ]
    chunks = sse_chunks(Assembler(model="m", tools=[TOOL]), events)
    calls = [c for c in chunks if isinstance(c, ToolCallDelta)]
    assert (calls[0].id, calls[0].arguments, calls[0].error) == ("c1", {"a": 2, "b": 3}, None)
    assert calls[1].error and "'x' is not of type 'integer'" in calls[1].error
    final = chunks[-1]
    assert isinstance(final, FinalChunk) and final.finish_reason == "tool_calls"
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (9, 4)


def test_missing_usage_is_counted_locally_or_zero() -> None:
    events = [delta(content="one two"), {"choices": [{"delta": {}, "finish_reason": "length"}]}]
    final = sse_chunks(Assembler(model="m"), events)[-1]
    assert isinstance(final, FinalChunk) and final.finish_reason == "length"
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (0, 0)
    counted = Assembler(model="m", count_tokens=lambda text: (5, len(text.split())))
    final = sse_chunks(counted, events)[-1]
    assert isinstance(final, FinalChunk)
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (5, 2)


def test_ollama_lines_thinking_tools_and_counts() -> None:
    assembler = Assembler(model="m", tools=[TOOL])
    lines = [
        {"message": {"role": "assistant", "content": "", "thinking": "plan"}, "done": False},
        {
            "message": {
                "content": "",
                "tool_calls": [{"function": {"name": "add", "arguments": {"a": 1, "b": 2}}}],
            },
            "done": False,
        },
        {
            "message": {"content": ""},
            "done": True,
            "done_reason": "stop",
            "prompt_eval_count": 7,
            "eval_count": 3,
            "eval_duration": 2_000_000_000,
        },
    ]
    chunks: list[object] = []
    for line in lines:
        chunks += ollama.apply_line(assembler, line)
    chunks += assembler.end()
    assert chunks[0] == ReasoningDelta("plan")
    call = next(c for c in chunks if isinstance(c, ToolCallDelta))
    assert call.arguments == {"a": 1, "b": 2} and call.error is None
    final = chunks[-1]
    assert isinstance(final, FinalChunk) and final.finish_reason == "tool_calls"
    assert final.usage.total_tokens == 10 and final.timings.generation_s == pytest.approx(2.0)


def test_models_metadata() -> None:
    body = {
        "data": [
            {"id": "Qwen/Qwen2.5-7B-Instruct", "max_model_len": 32768},
            {"id": "/m/x.gguf", "meta": {"n_ctx_train": 4096}},
            {"id": "plain"},
        ]
    }
    assert [(m.id, m.context_length) for m in openai.models_of(body)] == [
        ("Qwen/Qwen2.5-7B-Instruct", 32768),
        ("/m/x.gguf", 4096),
        ("plain", None),
    ]
