"""Turn what a server streams into the runtime's chunks, the same way for every dialect.

The dialect parsers (:mod:`.openai_dialect`, :mod:`.ollama_dialect`) feed an
:class:`Assembler` with text, reasoning and tool-call fragments, the finish
reason, usage, timings and tokens' log-probabilities (attached to the text that
follows them, as the in-process engine does); it applies the reasoning mode,
assembles tool calls (OpenAI streams their arguments in fragments, by index), validates their
arguments against the offered tools' schemas like the in-process engine, and
ends with exactly one :class:`~local_llm_runtime.types.FinalChunk`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from local_llm_runtime.logprobs import LogprobCarrier
from local_llm_runtime.prompt.reasoning import ReasoningMode, ThinkSplitter
from local_llm_runtime.prompt.tool_schema import validate_arguments
from local_llm_runtime.types import (
    Chunk,
    FinalChunk,
    FinishReason,
    ReasoningDelta,
    TextDelta,
    Timings,
    TokenLogprob,
    ToolCallDelta,
    Usage,
)

__all__ = ["Assembler", "tool_parameter_schemas"]


def tool_parameter_schemas(tools: Sequence[Mapping[str, Any]] | None) -> dict[str, Any]:
    """Tool name -> its parameter JSON schema (OpenAI-style ``function`` tools)."""
    out: dict[str, Any] = {}
    for tool in tools or ():
        function = tool.get("function", tool)
        if isinstance(function, Mapping) and isinstance(function.get("name"), str):
            params = function.get("parameters")
            out[function["name"]] = params if isinstance(params, Mapping) else {}
    return out


@dataclass
class _Call:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)
    decoded: dict[str, Any] | None = None


@dataclass
class Assembler:
    """Stateful: one per response.

    Args:
        model: The model name the final chunk reports (the caller's local name).
        reasoning: ``separate`` (reasoning chunks), ``hide`` or ``inline`` (``<think>`` text).
        tools: The offered tools (their schemas validate the calls' arguments).
        count_tokens: Counts ``(prompt_tokens, completion_tokens)`` locally when the
            server sends no usage (``None``: usage stays 0).
    """

    model: str
    reasoning: ReasoningMode = "separate"
    tools: Sequence[Mapping[str, Any]] | None = None
    count_tokens: Callable[[str], tuple[int, int] | None] | None = None
    started: float = field(default_factory=time.monotonic)
    _calls: dict[int, _Call] = field(default_factory=dict)
    _usage: Usage | None = None
    _timings: Timings | None = None
    _finish: str | None = None
    _first_at: float | None = None
    _inside: bool = False
    _text: list[str] = field(default_factory=list)
    _splitter: ThinkSplitter | None = None
    _done: bool = False
    _carrier: LogprobCarrier = field(default_factory=LogprobCarrier)
    complete: bool = False
    """Whether the server said the answer is whole (a finish reason, ``[DONE]``,
    Ollama's ``done``); an answer that ends without it was cut off."""

    def __post_init__(self) -> None:
        # A server without a reasoning parser sends "<think>...</think>" in the text.
        self._splitter = ThinkSplitter() if self.reasoning != "inline" else None

    # ---- input ------------------------------------------------------------------

    def logprobs(self, items: Sequence[TokenLogprob]) -> None:
        """Tokens' log-probabilities from the server, for the text that comes next."""
        for item in items:
            self._carrier.add(item)

    def text(self, text: str) -> list[Chunk]:
        """Answer text from the server (may open with a ``<think>`` block)."""
        if not text:
            return []
        self._mark()
        if self._splitter is None:
            return self._carried([*self._close_think(), TextDelta(text)])
        out: list[Chunk] = []
        for kind, piece in self._splitter.feed(text):
            out += self.reasoning_text(piece) if kind == "reasoning" else self._answer(piece)
        return self._carried(out)

    def reasoning_text(self, text: str) -> list[Chunk]:
        """Reasoning from the server (``reasoning_content``, ``reasoning``, ``thinking``)."""
        if not text:
            return []
        self._mark()
        if self.reasoning == "hide":
            self._carrier = LogprobCarrier()  # hidden tokens: their logprobs go with them
            return []
        if self.reasoning == "inline":
            opening = "" if self._inside else "<think>"
            self._inside = True
            return self._carried([TextDelta(opening + text)])
        return self._carried([ReasoningDelta(text)])

    def tool_fragment(
        self,
        index: int,
        *,
        id: str | None = None,
        name: str | None = None,
        arguments: str | Mapping[str, Any] | None = None,
    ) -> None:
        """A piece of tool call ``index`` (OpenAI: id/name first, arguments in fragments)."""
        self._mark()
        call = self._calls.setdefault(index, _Call())
        if id:
            call.id = id
        if name and not call.name:
            call.name = name
        if isinstance(arguments, Mapping):
            call.decoded = dict(arguments)
        elif arguments:
            call.arguments.append(arguments)

    def finish(self, reason: str | None) -> None:
        """The server's finish reason (``stop``, ``length``, ``tool_calls``...)."""
        if reason:
            self._finish = reason
            self.complete = True

    def ended(self) -> None:
        """The server's end-of-answer marker (``[DONE]``, Ollama's ``done: true``)."""
        self.complete = True

    def usage(self, prompt_tokens: int, completion_tokens: int) -> None:
        """Usage as the server reported it."""
        self._usage = Usage(int(prompt_tokens), int(completion_tokens))

    def timings(self, timings: Timings) -> None:
        """Timings as the server reported them (Ollama's durations)."""
        self._timings = timings

    # ---- output -----------------------------------------------------------------

    @property
    def calls(self) -> int:
        """Tool calls seen so far."""
        return len(self._calls)

    def end(self, *, cancelled: bool = False) -> list[Chunk]:
        """The pending tool calls, a closing ``</think>``, then the one final chunk."""
        if self._done:
            return []
        self._done = True
        out: list[Chunk] = []
        if self._splitter is not None:
            for kind, piece in self._splitter.finish():
                out += self.reasoning_text(piece) if kind == "reasoning" else self._answer(piece)
        out += self._close_think()
        if not cancelled:
            out += self._tool_calls()
        reason: FinishReason
        if cancelled:
            reason = "cancelled"
        elif self._calls:
            reason = "tool_calls"
        elif self._finish == "length":
            reason = "length"
        else:
            reason = "stop"
        usage = self._usage
        if usage is None:
            counted = self.count_tokens("".join(self._text)) if self.count_tokens else None
            usage = Usage(*counted) if counted else Usage(0, 0)
        timings = self._timings or self._measured(usage)
        out.append(FinalChunk(finish_reason=reason, usage=usage, timings=timings, model=self.model))
        return self._carried(out)

    # ---- internals --------------------------------------------------------------

    def _carried(self, chunks: list[Chunk]) -> list[Chunk]:
        return [self._carrier.attach(chunk) for chunk in chunks]

    def _mark(self) -> None:
        if self._first_at is None:
            self._first_at = time.monotonic()

    def _answer(self, text: str) -> list[Chunk]:
        if not text:
            return []
        self._text.append(text)
        return [*self._close_think(), TextDelta(text)]

    def _close_think(self) -> list[Chunk]:
        if self._inside:
            self._inside = False
            return [TextDelta("</think>")]
        return []

    def _measured(self, usage: Usage) -> Timings:
        now = time.monotonic()
        first = self._first_at if self._first_at is not None else now
        return Timings(
            load_s=0.0,
            queue_s=0.0,
            prompt_s=first - self.started,
            generation_s=now - first,
            prompt_tokens=usage.prompt_tokens,
            sampled_tokens=usage.completion_tokens,
        )

    def _tool_calls(self) -> list[Chunk]:
        schemas = tool_parameter_schemas(self.tools)
        out: list[Chunk] = []
        for position, index in enumerate(sorted(self._calls)):
            call = self._calls[index]
            error: str | None = None
            arguments: dict[str, Any] = {}
            if call.decoded is not None:
                arguments = call.decoded
            else:
                raw = "".join(call.arguments).strip() or "{}"
                try:
                    value = json.loads(raw)
                except json.JSONDecodeError as exc:
                    error = f"the arguments are not valid JSON ({exc.msg}): {raw[:200]!r}"
                    value = {}
                if isinstance(value, dict):
                    arguments = value
                elif error is None:
                    error = f"the arguments are not a JSON object: {raw[:200]!r}"
            if error is None:
                if call.name not in schemas:
                    offered = ", ".join(sorted(schemas)) or "none"
                    error = f"{call.name!r} is not an offered tool (offered: {offered})"
                else:
                    error = validate_arguments(schemas[call.name], arguments)
            out.append(
                ToolCallDelta(
                    index=position,
                    id=call.id or f"call_{position}",
                    name=call.name,
                    arguments=arguments,
                    error=error,
                )
            )
        return out
