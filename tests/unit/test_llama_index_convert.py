"""Pure converters and request building of the LlamaIndex adapter (no model)."""

from __future__ import annotations

import pytest
from llama_index.core.base.llms.types import (
    ChatMessage,
    ImageBlock,
    MessageRole,
    TextBlock,
    ThinkingBlock,
    ToolCallBlock,
)
from llama_index.core.tools import FunctionTool

from local_llm_integrations.llama_index._convert import (
    ChatAccumulator,
    chat_responses,
    completion_response,
    keep_first_tool_call,
    to_runtime_messages,
    tool_selections,
)
from local_llm_integrations.llama_index._options import (
    build_request,
    reasoning_mode,
    to_runtime_tools,
    tool_choice_for,
)
from local_llm_runtime.types import (
    FinalChunk,
    ReasoningDelta,
    TextDelta,
    Timings,
    ToolCallDelta,
    Usage,
)


def _final(prompt: int = 5, completion: int = 3) -> FinalChunk:
    return FinalChunk(
        finish_reason="stop",
        usage=Usage(prompt, completion),
        timings=Timings(0.0, 0.0, 0.1, 0.2, prompt, completion),
        model="m",
    )


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


# ---- chunks -> responses (thinking, tools, usage) ------------------------------


def test_reasoning_chunks_become_thinking_block_and_thinking_delta() -> None:
    chunks = [
        ReasoningDelta("Let me "),
        ReasoningDelta("think."),
        TextDelta("The answer"),
        TextDelta(" is 4."),
        _final(),
    ]
    responses = list(chat_responses(chunks))
    assert [r.additional_kwargs.get("thinking_delta") for r in responses] == [
        "Let me ",
        "think.",
        None,
        None,
        None,
    ]
    assert [r.delta for r in responses] == ["", "", "The answer", " is 4.", ""]
    last = responses[-1].message
    assert last.role == MessageRole.ASSISTANT
    assert last.content == "The answer is 4."  # reasoning never leaks into the answer
    thinking = [b for b in last.blocks if isinstance(b, ThinkingBlock)]
    assert [b.content for b in thinking] == ["Let me think."]
    assert isinstance(last.blocks[0], ThinkingBlock)  # thinking first, then the answer
    # every streamed response carries the whole message so far
    assert responses[2].message.content == "The answer"
    assert [b.content for b in responses[1].message.blocks if isinstance(b, ThinkingBlock)] == [
        "Let me think."
    ]


def test_final_chunk_carries_usage_for_token_counting() -> None:
    responses = list(chat_responses([TextDelta("hi"), _final(7, 2)]))
    assert responses[0].raw is None
    raw = responses[-1].raw
    assert raw["usage"] == {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}
    assert raw["finish_reason"] == "stop"
    assert raw["model"] == "m"
    assert responses[-1].additional_kwargs["prompt_tokens"] == 7

    from llama_index.core.callbacks.token_counting import get_tokens_from_response

    assert get_tokens_from_response(responses[-1]) == (7, 2)


def test_tool_call_chunks_become_tool_call_blocks() -> None:
    acc = ChatAccumulator()
    acc.add(ToolCallDelta(0, "call_1", "add", {"a": 1, "b": 2}))
    acc.add(ToolCallDelta(1, "call_2", "add", {"a": 3, "b": 4}))
    acc.add(_final())
    response = acc.response()
    calls = [b for b in response.message.blocks if isinstance(b, ToolCallBlock)]
    assert [(c.tool_call_id, c.tool_name, c.tool_kwargs) for c in calls] == [
        ("call_1", "add", {"a": 1, "b": 2}),
        ("call_2", "add", {"a": 3, "b": 4}),
    ]
    assert response.message.content is None  # no text block when the answer is only calls
    selections = tool_selections(response.message, error_on_no_tool_call=True)
    assert [(s.tool_id, s.tool_name, s.tool_kwargs) for s in selections] == [
        ("call_1", "add", {"a": 1, "b": 2}),
        ("call_2", "add", {"a": 3, "b": 4}),
    ]
    single = keep_first_tool_call(response)
    assert len(tool_selections(single.message, error_on_no_tool_call=True)) == 1


def test_no_tool_call() -> None:
    message = ChatAccumulator().message()
    assert message.content == ""
    assert tool_selections(message, error_on_no_tool_call=False) == []
    with pytest.raises(ValueError, match="tool call"):
        tool_selections(message, error_on_no_tool_call=True)


def test_string_tool_kwargs_are_decoded() -> None:
    message = ChatMessage(
        role="assistant", blocks=[ToolCallBlock(tool_name="add", tool_kwargs='{"a": 1}')]
    )
    assert tool_selections(message, error_on_no_tool_call=True)[0].tool_kwargs == {"a": 1}


def test_completion_response_keeps_thinking_apart() -> None:
    responses = list(chat_responses([ReasoningDelta("hmm"), TextDelta("42"), _final()]))
    first = completion_response(responses[0])
    assert first.delta == ""
    assert first.additional_kwargs["thinking_delta"] == "hmm"
    last = completion_response(responses[-1])
    assert last.text == "42"
    assert last.additional_kwargs["thinking"] == "hmm"
    assert last.raw["usage"]["completion_tokens"] == 3


# ---- messages -> runtime -------------------------------------------------------


def test_messages_to_runtime_roles_tools_and_thinking() -> None:
    messages = [
        ChatMessage(role="system", content="Be brief."),
        ChatMessage(role="developer", content="Really brief."),
        ChatMessage(role="user", content="Add 1 and 2."),
        ChatMessage(
            role="assistant",
            blocks=[
                ThinkingBlock(content="use the tool"),
                ToolCallBlock(tool_call_id="c1", tool_name="add", tool_kwargs={"a": 1, "b": 2}),
            ],
        ),
        ChatMessage(role="tool", content="3", additional_kwargs={"tool_call_id": "c1"}),
        ChatMessage(role="assistant", blocks=[TextBlock(text="It is "), TextBlock(text="3.")]),
    ]
    assert to_runtime_messages(messages) == [
        {"role": "system", "content": "Be brief."},
        {"role": "system", "content": "Really brief."},
        {"role": "user", "content": "Add 1 and 2."},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "add", "arguments": {"a": 1, "b": 2}},
                }
            ],
            "reasoning_content": "use the tool",
        },
        {"role": "tool", "content": "3", "tool_call_id": "c1"},
        {"role": "assistant", "content": "It is \n3."},
    ]


def test_legacy_openai_tool_calls_in_additional_kwargs() -> None:
    message = ChatMessage(
        role="assistant",
        content="",
        additional_kwargs={
            "tool_calls": [{"id": "x", "function": {"name": "add", "arguments": '{"a": 1}'}}]
        },
    )
    (converted,) = to_runtime_messages([message])
    assert converted["tool_calls"] == [
        {"id": "x", "type": "function", "function": {"name": "add", "arguments": '{"a": 1}'}}
    ]


def test_images_are_refused() -> None:
    message = ChatMessage(role="user", blocks=[ImageBlock(url="http://127.0.0.1/x.png")])
    with pytest.raises(ValueError, match="text"):
        to_runtime_messages([message])


# ---- request building ------------------------------------------------------------


def test_fields_and_per_call_overrides() -> None:
    defaults = {"model": "m", "temperature": 0.5, "num_predict": 10, "top_k": None}
    request = build_request(defaults, {"temperature": 0.0, "max_tokens": 3, "stop": ["x"]})
    assert request.model == "m"
    assert request.options == {"temperature": 0.0, "num_predict": 3, "stop": ["x"]}
    assert request.reasoning == "separate"
    assert "tools" not in request.chat_kwargs()
    assert build_request(defaults, {"model": "other"}).model == "other"
    # bookkeeping arguments LlamaIndex passes along are ignored
    assert build_request(defaults, {"formatted": True, "verbose": False}).options == {
        "temperature": 0.5,
        "num_predict": 10,
    }


@pytest.mark.parametrize(
    ("kwargs", "mode"),
    [
        ({}, "separate"),
        ({"thinking": True}, "separate"),
        ({"think": False}, "hide"),
        ({"reasoning": "inline"}, "inline"),
        ({"reasoning": "hide"}, "hide"),
    ],
)
def test_reasoning_per_call(kwargs: dict[str, object], mode: str) -> None:
    assert build_request({"model": "m"}, kwargs).reasoning == mode
    assert build_request({"model": "m"}, kwargs).chat_kwargs()["reasoning"] == mode


def test_reasoning_mode_rejects_nonsense() -> None:
    assert reasoning_mode(None) == "separate"
    with pytest.raises(ValueError, match="reasoning"):
        reasoning_mode("loud")  # type: ignore[arg-type]


def test_tools_and_tool_choice() -> None:
    tool = FunctionTool.from_defaults(fn=add)
    (spec,) = to_runtime_tools([tool])
    assert spec["type"] == "function"
    assert spec["function"]["name"] == "add"
    assert spec["function"]["parameters"]["required"] == ["a", "b"]
    assert to_runtime_tools([spec]) == [spec]
    with pytest.raises(TypeError):
        to_runtime_tools([object()])

    assert tool_choice_for(None) == "auto"
    assert tool_choice_for(None, tool_required=True) == "required"
    assert tool_choice_for("any") == "required"
    assert tool_choice_for("add") == "add"
    assert tool_choice_for({"type": "function", "function": {"name": "add"}}) == "add"

    request = build_request({"model": "m"}, {"tools": [tool], "tool_required": True})
    assert request.chat_kwargs()["tool_choice"] == "required"
    assert request.chat_kwargs()["tools"] == [spec]
    # no tools: nothing to require
    assert build_request({"model": "m"}, {"tools": [], "tool_required": True}).tool_choice == "auto"
