"""OpenAI wire format without HTTP: requests -> engine arguments, chunks -> wire objects."""

from __future__ import annotations

import base64
import math
import struct
from typing import Any

import pytest

from local_llm_runtime.server.errors import HTTPError
from local_llm_runtime.server.openai_wire import (
    ChatChunker,
    ChatCompletionRequest,
    CompletionChunker,
    CompletionRequest,
    EmbeddingRequest,
    chat_arguments,
    chat_completion,
    completion_arguments,
    embedding_inputs,
    embedding_list,
    text_completion,
)
from local_llm_runtime.types import (
    ChatResult,
    FinalChunk,
    ReasoningDelta,
    TextDelta,
    Timings,
    ToolCallDelta,
    Usage,
)

USER = [{"role": "user", "content": "Hi"}]
TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def chat(**fields: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"model": "m", "messages": USER, **fields})


def final(reason: Any = "stop") -> FinalChunk:
    return FinalChunk(reason, Usage(5, 3), Timings(0, 0, 0, 0), "m")


@pytest.mark.parametrize(
    ("fields", "options"),
    [
        ({"temperature": 0.2}, {"temperature": 0.2}),
        ({"top_p": 0.5}, {"top_p": 0.5}),
        ({"frequency_penalty": 0.5}, {"frequency_penalty": 0.5}),
        ({"presence_penalty": -1.0}, {"presence_penalty": -1.0}),
        ({"seed": 42}, {"seed": 42}),
        ({"max_tokens": 7}, {"num_predict": 7}),
        ({"max_completion_tokens": 9}, {"num_predict": 9}),
        ({"stop": "END"}, {"stop": ["END"]}),
        ({"stop": ["a", "b"]}, {"stop": ["a", "b"]}),
        (
            {"top_k": 10, "min_p": 0.1, "repeat_penalty": 1.0},
            {"top_k": 10, "min_p": 0.1, "repeat_penalty": 1.0},
        ),
        ({}, {}),
    ],
)
def test_sampling_fields_map_to_the_engines_option_names(
    fields: dict[str, Any], options: dict[str, Any]
) -> None:
    assert chat_arguments(chat(**fields)).options == options
    prompt = (
        CompletionRequest.model_validate({"model": "m", "prompt": "x", **fields})
        if ("max_completion_tokens" not in fields)
        else None
    )
    if prompt is not None:
        assert completion_arguments(prompt).options == options


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        (None, "auto"),
        ("auto", "auto"),
        ("none", "none"),
        ("required", "required"),
        ({"type": "function", "function": {"name": "get_weather"}}, "get_weather"),
    ],
)
def test_tool_choice_goes_to_the_engine(choice: Any, expected: str) -> None:
    fields: dict[str, Any] = {"tools": [TOOL]}
    if choice is not None:
        fields["tool_choice"] = choice
    args = chat_arguments(chat(**fields))
    assert args.tool_choice == expected
    assert args.tools == [TOOL]


def test_parallel_tool_calls_false_is_forwarded() -> None:
    assert chat_arguments(chat(tools=[TOOL])).parallel_tool_calls is True
    assert (
        chat_arguments(chat(tools=[TOOL], parallel_tool_calls=False)).parallel_tool_calls is False
    )


SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}


@pytest.mark.parametrize(
    ("response_format", "expected"),
    [
        ({"type": "text"}, None),
        ({"type": "json_object"}, "json"),
        (
            {"type": "json_schema", "json_schema": {"name": "A", "schema": SCHEMA, "strict": True}},
            SCHEMA,
        ),
        ({"type": "json_schema", "json_schema": {"name": "A"}}, "json"),
    ],
)
def test_response_format_becomes_the_engines_format(
    response_format: dict[str, Any], expected: Any
) -> None:
    assert chat_arguments(chat(response_format=response_format)).format == expected


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"n": 2}, "n"),
        ({"top_logprobs": 3}, "top_logprobs"),  # needs logprobs: true
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),  # 0 to 20
        ({"logit_bias": {"50256": -100}}, "logit_bias"),
        ({"audio": {"voice": "alloy", "format": "wav"}}, "audio"),
        ({"modalities": ["text", "audio"]}, "modalities"),
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"stream_options": {"include_usage": True}}, "stream_options"),
        ({"max_tokens": 3, "max_completion_tokens": 3}, "max_tokens"),
        (
            {"tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "tool_choice",
        ),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"seed": 2**40}, "seed"),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "image_url",
                                "image_url": {"url": "data:image/png;base64,AA=="},
                            }
                        ],
                    }
                ]
            },
            "messages.0.content.0",
        ),
        ({"messages": [{"role": "function", "name": "f", "content": "x"}]}, "messages.0.role"),
    ],
)
def test_what_the_server_cannot_do_is_a_400_naming_the_field(
    fields: dict[str, Any], param: str
) -> None:
    with pytest.raises(HTTPError) as info:
        chat_arguments(chat(**fields))
    assert info.value.status == 400
    assert info.value.param == param
    assert param.split(".", maxsplit=1)[0] in info.value.message


def test_harmless_fields_are_accepted() -> None:
    args = chat_arguments(
        chat(
            user="u1", metadata={"k": "v"}, store=False, service_tier="auto", n=1,
            logprobs=False, logit_bias={}, modalities=["text"], reasoning_effort="low",
            prompt_cache_key="k", safety_identifier="s", verbosity="low", stream=True,
            stream_options={"include_usage": True},
        )
    )  # fmt: skip
    assert args.options == {}


def test_messages_become_the_engines_openai_style_messages() -> None:
    req = chat(
        messages=[
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Weather"}]},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
                "refusal": None,
                "annotations": [],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        ]
    )
    assert chat_arguments(req).messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Weather"}]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "content": "sunny", "tool_call_id": "call_1"},
    ]


def test_stream_chunks_role_first_reasoning_tool_call_finish_and_usage() -> None:
    chunker = ChatChunker(model="m", include_usage=True)
    chunks = [
        ReasoningDelta("think"),
        TextDelta(""),
        TextDelta("Hi"),
        ToolCallDelta(0, "call_a", "get_weather", {"city": "Paris"}),
        ToolCallDelta(1, "call_b", "get_weather", {"city": 3}, error="city: not a string"),
        final("tool_calls"),
    ]
    objects = [obj for chunk in chunks for obj in chunker.convert(chunk)]
    deltas = [o["choices"][0]["delta"] for o in objects[:-1]]
    assert deltas == [
        {"role": "assistant", "reasoning_content": "think"},
        {"content": "Hi"},
        {"tool_calls": [{"index": 0, "id": "call_a", "type": "function",
                         "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"tool_calls": [{"index": 1, "id": "call_b", "type": "function",
                         "function": {"name": "get_weather", "arguments": '{"city": 3}'}}]},
        {},
    ]  # fmt: skip
    assert [o["choices"][0]["finish_reason"] for o in objects[:-1]] == [None] * 4 + ["tool_calls"]
    assert all(o["usage"] is None for o in objects[:-1])
    assert objects[-1]["choices"] == []
    assert objects[-1]["usage"] == {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
    assert {o["id"] for o in objects} == {chunker.id} and chunker.id.startswith("chatcmpl-")
    assert {o["object"] for o in objects} == {"chat.completion.chunk"}


def test_an_empty_answer_still_announces_the_role_and_no_usage_key_without_include_usage() -> None:
    objects = ChatChunker(model="m").convert(final("cancelled"))
    assert objects[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert objects[1]["choices"][0]["finish_reason"] == "length"
    assert all("usage" not in o for o in objects)


def test_whole_chat_completion() -> None:
    result = ChatResult(
        text="",
        reasoning="hmm",
        tool_calls=[ToolCallDelta(0, "call_a", "f", {"x": 1})],
        finish_reason="tool_calls",
        usage=Usage(4, 6),
    )
    body = chat_completion(result, id="chatcmpl-1", created=1, model="m")
    choice = body["choices"][0]
    assert choice["message"] == {
        "role": "assistant",
        "content": None,
        "refusal": None,
        "tool_calls": [
            {"id": "call_a", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}
        ],
        "reasoning_content": "hmm",
    }
    assert choice["finish_reason"] == "tool_calls" and choice["logprobs"] is None
    assert body["usage"]["total_tokens"] == 10 and body["object"] == "chat.completion"
    plain = chat_completion(ChatResult(text="ok"), id="x", created=1, model="m")
    assert plain["choices"][0]["message"]["content"] == "ok"
    assert "tool_calls" not in plain["choices"][0]["message"]


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"echo": True}, "echo"),
        ({"suffix": "}"}, "suffix"),
        ({"best_of": 2}, "best_of"),
        ({"logprobs": 21}, "logprobs"),  # the legacy number of alternatives: 0 to 20
        ({"n": 3}, "n"),
        ({"prompt": [1, 2, 3]}, "prompt"),
        ({"prompt": ["a", "b"]}, "prompt"),
    ],
)
def test_completion_refusals(fields: dict[str, Any], param: str) -> None:
    req = CompletionRequest.model_validate({"model": "m", "prompt": "x", **fields})
    with pytest.raises(HTTPError) as info:
        completion_arguments(req)
    assert (info.value.status, info.value.param) == (400, param)


def test_completion_prompt_as_a_list_of_one_string() -> None:
    req = CompletionRequest.model_validate({"model": "m", "prompt": ["def f():"]})
    assert completion_arguments(req).prompt == "def f():"


def test_completion_objects() -> None:
    chunker = CompletionChunker(model="m", include_usage=True)
    objects = [
        o
        for c in (TextDelta("a"), ReasoningDelta("r"), TextDelta("b"), final("length"))
        for o in chunker.convert(c)
    ]
    assert [o["choices"][0]["text"] for o in objects[:-1]] == ["a", "b", ""]
    assert objects[-2]["choices"][0]["finish_reason"] == "length"
    assert objects[-1]["choices"] == [] and objects[-1]["usage"]["total_tokens"] == 8
    assert {o["object"] for o in objects} == {"text_completion"}
    whole = text_completion(ChatResult(text="ab"), id="cmpl-1", created=1, model="m")
    assert whole["choices"][0] == {
        "index": 0, "text": "ab", "logprobs": None, "finish_reason": "stop"
    }  # fmt: skip


def test_embeddings_float_and_base64_little_endian_float32() -> None:
    vectors = [[0.6, 0.8, 0.0], [1.0, 0.0, 0.0]]
    floats = embedding_list(vectors, model="m", prompt_tokens=4)
    assert [d["embedding"] for d in floats["data"]] == vectors
    assert [d["index"] for d in floats["data"]] == [0, 1]
    assert floats["usage"] == {"prompt_tokens": 4, "total_tokens": 4}
    encoded = embedding_list(vectors, model="m", prompt_tokens=4, encoding_format="base64")
    raw = base64.b64decode(encoded["data"][0]["embedding"])
    assert len(raw) == 12
    assert list(struct.unpack("<3f", raw)) == pytest.approx(vectors[0])


def test_embedding_dimensions_truncate_and_renormalize_or_400() -> None:
    short = embedding_list([[0.6, 0.0, 0.8]], model="m", prompt_tokens=1, dimensions=2)
    assert short["data"][0]["embedding"] == pytest.approx([1.0, 0.0])
    assert math.isclose(sum(x * x for x in short["data"][0]["embedding"]), 1.0)
    with pytest.raises(HTTPError) as info:
        embedding_list([[1.0, 0.0]], model="m", prompt_tokens=1, dimensions=3)
    assert info.value.param == "dimensions"


@pytest.mark.parametrize(
    ("value", "texts"),
    [("one", ["one"]), (["a", "b"], ["a", "b"]), ([1, 2], None), ([[1], [2]], None), ([], None)],
)
def test_embedding_inputs(value: Any, texts: list[str] | None) -> None:
    req = EmbeddingRequest.model_validate({"model": "m", "input": value})
    if texts is None:
        with pytest.raises(HTTPError) as info:
            embedding_inputs(req)
        assert info.value.param == "input"
    else:
        assert embedding_inputs(req) == texts
