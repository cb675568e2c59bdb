"""Pure converters of Ollama's wire format (no HTTP, no engine)."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from local_llm_runtime.server import ollama_wire as wire
from local_llm_runtime.server.errors import HTTPError
from local_llm_runtime.store.hub import PullProgress
from local_llm_runtime.types import (
    ChatResult,
    FinalChunk,
    ReasoningDelta,
    RunningModel,
    TextDelta,
    Timings,
    ToolCallDelta,
    Usage,
)

FINAL = FinalChunk(
    finish_reason="stop",
    usage=Usage(12, 5),
    timings=Timings(load_s=0.25, queue_s=0.0, prompt_s=0.5, generation_s=1.5),
    model="m",
)


def test_created_at_is_rfc3339_utc() -> None:
    when = datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=timezone.utc)
    assert wire.created_at(when) == "2024-05-01T12:30:15.123456Z"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", wire.created_at())


@pytest.mark.parametrize(
    ("chunk", "message"),
    [
        (TextDelta("Hi"), {"role": "assistant", "content": "Hi"}),
        (ReasoningDelta("hmm"), {"role": "assistant", "content": "", "thinking": "hmm"}),
        (
            ToolCallDelta(0, "call_0", "add", {"a": 1}),
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {"id": "call_0", "function": {"index": 0, "name": "add", "arguments": {"a": 1}}}
                ],
            },
        ),
    ],
)
def test_chat_chunks(chunk: Any, message: dict[str, Any]) -> None:
    obj = wire.chat_chunk("m:1", chunk)
    assert obj is not None
    assert obj["message"] == message and obj["done"] is False and obj["model"] == "m:1"


def test_invalid_tool_call_is_not_sent_as_a_call() -> None:
    bad = ToolCallDelta(0, "call_0", "add", {"a": "x"}, error="a: not an integer")
    assert wire.chat_chunk("m", bad) is None


@pytest.mark.parametrize(
    ("reason", "expected"),
    [("stop", "stop"), ("length", "length"), ("tool_calls", "stop"), ("cancelled", "cancelled")],
)
def test_final_object_has_nanosecond_metrics(reason: str, expected: str) -> None:
    final = FinalChunk(reason, FINAL.usage, FINAL.timings, "m")  # type: ignore[arg-type]
    for convert in (wire.chat_chunk, wire.generate_chunk):
        obj = convert("m", final, total_s=2.5)
        assert obj is not None
        assert obj["done"] is True and obj["done_reason"] == expected
        assert obj["total_duration"] == 2_500_000_000
        assert obj["load_duration"] == 250_000_000
        assert obj["prompt_eval_count"] == 12 and obj["prompt_eval_duration"] == 500_000_000
        assert obj["eval_count"] == 5 and obj["eval_duration"] == 1_500_000_000


def test_generate_chunks() -> None:
    assert wire.generate_chunk("m", TextDelta("a"))["response"] == "a"  # type: ignore[index]
    thinking = wire.generate_chunk("m", ReasoningDelta("r"))
    assert thinking is not None and thinking["thinking"] == "r" and thinking["response"] == ""


def test_whole_responses() -> None:
    result = ChatResult(
        text="4",
        reasoning="2+2",
        tool_calls=[ToolCallDelta(0, "c", "f", {})],
        finish_reason="tool_calls",
        usage=Usage(3, 4),
        timings=FINAL.timings,
    )
    chat = wire.chat_response("m", result, total_s=1.0)
    assert chat["message"]["content"] == "4" and chat["message"]["thinking"] == "2+2"
    assert chat["message"]["tool_calls"][0]["function"]["name"] == "f"
    assert chat["done_reason"] == "stop" and chat["eval_count"] == 4
    gen = wire.generate_response("m", result, total_s=1.0)
    assert gen["response"] == "4" and gen["thinking"] == "2+2" and gen["done"] is True


def test_messages_get_call_ids_and_tool_results_are_paired_by_name() -> None:
    messages = [
        wire.Message(role="user", content="weather and time?"),
        wire.Message(
            role="assistant",
            content="",
            thinking="I should call both",
            tool_calls=[
                wire.ToolCall(function=wire.ToolCallFunction(name="weather", arguments={"c": "P"})),
                wire.ToolCall(function=wire.ToolCallFunction(name="time", arguments="{}")),
            ],
        ),
        wire.Message(role="tool", content="12:00", tool_name="time"),
        wire.Message(role="tool", content="sunny", tool_name="weather"),
    ]
    out = wire.to_engine_messages(messages)
    assert out[1]["tool_calls"] == [
        {
            "id": "call_1_0",
            "type": "function",
            "function": {"name": "weather", "arguments": {"c": "P"}},
        },
        {"id": "call_1_1", "type": "function", "function": {"name": "time", "arguments": {}}},
    ]
    assert "thinking" not in out[1]
    assert out[2] == {
        "role": "tool",
        "content": "12:00",
        "name": "time",
        "tool_call_id": "call_1_1",
    }
    assert out[3]["tool_call_id"] == "call_1_0" and out[3]["name"] == "weather"


@pytest.mark.parametrize(
    ("message", "param"),
    [
        (wire.Message(role="user", content="x", images=["aGk="]), "messages.0.images"),
        (
            wire.Message(
                role="assistant",
                tool_calls=[
                    wire.ToolCall(function=wire.ToolCallFunction(name="f", arguments="[1]"))
                ],
            ),
            "messages.0.tool_calls.0",
        ),
    ],
)
def test_messages_refused(message: wire.Message, param: str) -> None:
    with pytest.raises(HTTPError) as info:
        wire.to_engine_messages([message])
    assert info.value.status == 400 and info.value.param == param


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (
            {"temperature": 0.2, "num_predict": 5, "stop": ["x"]},
            {"temperature": 0.2, "num_predict": 5, "stop": ["x"]},
        ),
        ({"use_mmap": True, "numa": False, "num_keep": 4, "seed": None}, {}),
        ({"mirostat": 0, "tfs_z": 1.0, "mirostat_eta": 0.1}, {}),
        (None, {}),
    ],
)
def test_options_accepted(options: dict[str, Any] | None, expected: dict[str, Any]) -> None:
    assert wire.engine_options(options) == expected


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"temprature": 0.2}, "temperature"),  # unknown: the closest known name
        ({"temperature": "hot"}, "temperature"),
        ({"num_ctx": -1}, "num_ctx"),
        ({"mirostat": 2}, "mirostat"),
        ({"tfs_z": 0.5}, "tfs_z"),
        ({"keep_alive": "5m"}, "keep_alive"),
    ],
)
def test_options_refused(options: dict[str, Any], named: str) -> None:
    with pytest.raises(HTTPError) as info:
        wire.engine_options(options)
    assert info.value.status == 400 and named in info.value.message


@pytest.mark.parametrize(
    ("value", "seconds"), [(None, None), ("5m", 300.0), (0, 0.0), ("-1", -1.0), (30, 30.0)]
)
def test_keep_alive(value: Any, seconds: float | None) -> None:
    assert wire.keep_alive_seconds(value) == seconds


def test_bad_keep_alive() -> None:
    with pytest.raises(HTTPError, match="keep_alive"):
        wire.keep_alive_seconds("soon")


def test_format_and_think() -> None:
    assert wire.engine_format(None) is None and wire.engine_format("") is None
    assert wire.engine_format("json") == "json"
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    assert wire.engine_format(schema) == schema
    with pytest.raises(HTTPError):
        wire.engine_format({})
    assert wire.reasoning_mode(None) == "separate"
    assert wire.reasoning_mode(True) == "separate" and wire.reasoning_mode("high") == "separate"
    assert wire.reasoning_mode(False) == "hide"


@pytest.mark.parametrize(
    ("model", "body", "field"),
    [
        (wire.GenerateRequest, {"model": "m", "prompt": "p", "suffix": "s"}, "suffix"),
        (
            wire.GenerateRequest,
            {"model": "m", "prompt": "p", "template": "{{ .Prompt }}"},
            "template",
        ),
        (wire.GenerateRequest, {"model": "m", "prompt": "p", "context": [1, 2]}, "context"),
        (wire.GenerateRequest, {"model": "m", "prompt": "p", "images": ["aGk="]}, "images"),
        (wire.CreateRequest, {"model": "m", "from": "x", "quantize": "q4_K_M"}, "quantize"),
        (wire.CreateRequest, {"model": "m", "files": {"a.gguf": "sha256:0"}}, "files"),
    ],
)
def test_unsupported_fields_are_refused_not_ignored(
    model: Any, body: dict[str, Any], field: str
) -> None:
    request = model.model_validate(body)
    with pytest.raises(HTTPError) as info:
        wire.refuse_unsupported(request)
    assert info.value.param == field


def test_empty_defaults_of_unsupported_fields_are_accepted() -> None:
    request = wire.GenerateRequest.model_validate(
        {"model": "m", "prompt": "p", "suffix": "", "context": [], "images": [], "logprobs": False}
    )
    wire.refuse_unsupported(request)


@pytest.mark.parametrize(
    "body",
    [
        {"model": "m", "messages": [], "bogus": 1},  # unknown field
        {"model": "m", "stream": "yes"},  # no coercion
        {"model": "", "messages": []},
        {"model": "m", "messages": [{"role": "robot", "content": "x"}]},
        {"model": "m", "messages": "hi"},
        {"model": "m", "format": "yaml"},
        {"model": "m", "think": "maybe"},
    ],
)
def test_chat_request_validation(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        wire.ChatRequest.model_validate(body)


def test_create_request_takes_from() -> None:
    request = wire.CreateRequest.model_validate({"model": "m", "from": "a:b"})
    assert request.from_ == "a:b"


def test_dimensions_truncate_and_renormalize() -> None:
    from local_llm_runtime.server.vectors import shorten

    out = shorten([[0.6, 0.8, 0.0], [1.0, 0.0, 0.0]], 1)
    assert out == [[1.0], [1.0]]
    assert shorten([[0.6, 0.8]], 2) == [[0.6, 0.8]]
    assert shorten([[1.0]], None) == [[1.0]]
    with pytest.raises(HTTPError, match="dimensions"):
        shorten([[1.0]], 2)


def test_parameters_text_and_modelfile() -> None:
    params = {"temperature": 0.2, "stop": ["<|im_end|>", "User:"]}
    text = wire.parameters_text(params)
    assert text.splitlines() == [
        f"{'temperature':<30} 0.2",
        f'{"stop":<30} "<|im_end|>"',
        f'{"stop":<30} "User:"',
    ]
    mf = wire.modelfile(
        "x:1", "/blobs/a.gguf", template="{{t}}", system="Be brief.", parameters=params
    )
    assert "FROM /blobs/a.gguf" in mf and 'SYSTEM """Be brief."""' in mf
    assert 'PARAMETER stop "User:"' in mf and 'TEMPLATE """{{t}}"""' in mf


def test_ps_entry() -> None:
    running = RunningModel(
        name="m:1",
        path=Path("/x.gguf"),
        size=1000,
        num_ctx=2048,
        gpu_layers=0,
        offload="cpu",
        embedding=False,
        expires_at=datetime(2030, 1, 1, tzinfo=timezone.utc),
        active_requests=0,
    )
    entry = wire.running_model(running, digest="ab", info=None)
    assert entry["expires_at"] == "2030-01-01T00:00:00.000000Z"
    assert entry["size_vram"] == 0 and entry["context_length"] == 2048 and entry["digest"] == "ab"


def test_pull_status_objects() -> None:
    assert wire.pull_status(PullProgress("pulling manifest")) == {"status": "pulling manifest"}
    digest = "a" * 64
    assert wire.pull_status(PullProgress("pulling", "m.gguf", digest, 10, 4)) == {
        "status": f"pulling {digest[:12]}",
        "digest": f"sha256:{digest}",
        "total": 10,
        "completed": 4,
    }
