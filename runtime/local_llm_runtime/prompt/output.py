"""A generation request's text side: what it asks for, and its output pipeline.

:class:`Request` is a prepared prompt with what shapes its answer (tools, tool
choice, schema, reasoning mode, extra stops). :class:`OutputPipeline` turns the
model's bytes into typed chunks::

    bytes -> text (UTF-8) -> stop sequences -> <think> split -> tool-call parse
    -> TextDelta / ReasoningDelta / ToolCallDelta

Pure text: no ``llama_cpp``; a backend feeds it the detokenized bytes of each token.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from local_llm_runtime.prompt.chat_template import ChatTemplate
from local_llm_runtime.prompt.reasoning import ReasoningMode, ThinkSplitter
from local_llm_runtime.prompt.streaming import StopFilter, Utf8Decoder
from local_llm_runtime.prompt.tool_calls import ToolCall, ToolCallParser
from local_llm_runtime.prompt.tool_schema import tool_schemas
from local_llm_runtime.types import Chunk, ReasoningDelta, TextDelta, ToolCallDelta, ToolChoice

__all__ = ["OutputPipeline", "Request", "tool_names"]


@dataclass
class Request:
    """A prompt ready to tokenize and what shapes its answer."""

    prompt: str
    tools: Sequence[Mapping[str, Any]] = ()
    tool_choice: ToolChoice = "auto"
    parallel_tool_calls: bool = True
    schema: Mapping[str, Any] | Literal["json"] | None = None
    reasoning: ReasoningMode = "separate"
    starts_thinking: bool = False
    tool_parser: bool = False
    extra_stops: tuple[str, ...] = field(default_factory=tuple)
    raw: bool = False
    """The caller's own prompt: special-token text in it is parsed (Ollama's ``raw``)."""


class OutputPipeline:
    """bytes -> text -> stop sequences -> reasoning split -> tool calls -> chunks."""

    def __init__(self, template: ChatTemplate, request: Request, stops: Sequence[str]) -> None:
        self._utf8 = Utf8Decoder()
        self._stops = StopFilter([*stops, *request.extra_stops])
        use_think = request.reasoning != "inline" and (template.thinks or request.starts_thinking)
        open_tag, close_tag = template.think_tags or ("<think>", "</think>")
        self._think = (
            ThinkSplitter(
                open_tag=open_tag, close_tag=close_tag, started_inside=request.starts_thinking
            )
            if use_think
            else None
        )
        self._hide_reasoning = request.reasoning == "hide"
        self._tools = (
            ToolCallParser(
                template.tool_format,
                tool_names(request.tools),
                schemas=tool_schemas(request.tools),
            )
            if request.tool_parser
            else None
        )
        self._one_call = not request.parallel_tool_calls
        self.tool_calls: list[ToolCall] = []

    @property
    def stopped(self) -> bool:
        """A stop sequence was met, or the one allowed tool call is complete."""
        return self._stops.stopped or (self._one_call and bool(self.tool_calls))

    def feed(self, piece: bytes) -> Iterator[Chunk]:
        """The chunks that one token's bytes complete (possibly none)."""
        yield from self._text(self._stops.feed(self._utf8.feed(piece)))

    def finish(self, *, ended_naturally: bool) -> Iterator[Chunk]:
        """Flush what is buffered (an unfinished call completed only if ``ended_naturally``)."""
        if not self._stops.stopped:
            yield from self._text(self._stops.feed(self._utf8.finish()))
        yield from self._text(self._stops.finish())
        if self._think is not None:
            yield from self._route(self._think.finish())
        if self._tools is not None:
            yield from self._answer_items(self._tools.finish(ended_naturally=ended_naturally))

    def _text(self, text: str) -> Iterator[Chunk]:
        if not text:
            return
        if self._think is None:
            yield from self._answer(text)
        else:
            yield from self._route(self._think.feed(text))

    def _route(self, parts: list[tuple[Literal["text", "reasoning"], str]]) -> Iterator[Chunk]:
        for kind, text in parts:
            if kind == "reasoning":
                if text and not self._hide_reasoning:
                    yield ReasoningDelta(text)
            else:
                yield from self._answer(text)

    def _answer(self, text: str) -> Iterator[Chunk]:
        if self._tools is None:
            if text:
                yield TextDelta(text)
            return
        yield from self._answer_items(self._tools.feed(text))

    def _answer_items(self, items: list[str | ToolCall]) -> Iterator[Chunk]:
        for item in items:
            if self._one_call and self.tool_calls:
                return  # parallel_tool_calls=False: nothing after the first call
            if isinstance(item, str):
                if item:
                    yield TextDelta(item)
            else:
                self.tool_calls.append(item)
                yield ToolCallDelta(
                    index=len(self.tool_calls) - 1,
                    id=item.id,
                    name=item.name,
                    arguments=item.arguments,
                    error=item.error,
                )


def tool_names(tools: Sequence[Mapping[str, Any]]) -> set[str]:
    """The function names of OpenAI-style tools (entries without one are skipped)."""
    names = set()
    for tool in tools:
        function = tool.get("function", tool)
        if isinstance(function, Mapping) and isinstance(function.get("name"), str):
            names.add(function["name"])
    return names
