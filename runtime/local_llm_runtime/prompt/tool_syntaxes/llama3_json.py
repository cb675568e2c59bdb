r"""Llama 3.1+ tool calls: the whole answer is ``{"name": ..., "parameters": {...}}``.

Optionally after ``<|python_tag|>``; several calls separated by ``;`` or newlines.
Calls count only if the output starts with ``{`` or the python tag: anything else
makes the whole output text, streamed at once.
"""

from __future__ import annotations

from typing import ClassVar

from local_llm_runtime.prompt.tool_syntaxes.base import SEPARATORS, CallStream, ToolSyntax

__all__ = ["Llama3Json"]

PYTHON_TAG = "<|python_tag|>"


class Llama3Json(ToolSyntax):
    """JSON call objects as the whole answer (Llama 3.1, 3.2, 3.3)."""

    name: ClassVar[str] = "llama3"
    markers: ClassVar[tuple[str, ...]] = (PYTHON_TAG, "ipython")
    arguments_key: ClassVar[str] = "parameters"

    def step(self, stream: CallStream) -> bool:  # noqa: D102 - see ToolSyntax.step
        if stream.mode in ("start", "text"):  # "text": between two calls
            stripped = stream.buf.lstrip(SEPARATORS if stream.mode == "text" else None)
            if stripped.startswith(PYTHON_TAG):
                stream.buf, stream.mode = stripped[len(PYTHON_TAG) :], "text"
                return True
            if not stripped or PYTHON_TAG.startswith(stripped):
                return False
            if not stripped.startswith("{"):
                if stream.mode == "text":
                    stream.buf = stripped  # separators after the last call are dropped
                stream.mode = "plain"
                return True
            stream.open_block("", stripped)
        end = stream.scan.scan(stream.buf)
        if end is None:
            return False
        stream.block(stream.buf[:end], stream.buf[:end])
        stream.buf, stream.mode = stream.buf[end:], "text"
        return True

    def finish(self, stream: CallStream, rest: str) -> None:  # noqa: D102 - see ToolSyntax
        if stream.mode == "block":
            stream.block(rest, rest)  # a call cut short at the end may still be completed
        elif stream.mode == "text":
            stream.text(rest.lstrip(SEPARATORS))
        else:
            stream.text(rest)

    def grammar_root(self, parallel: bool) -> str:  # noqa: D102 - see ToolSyntax
        return 'call-root (";" " " call-root)*' if parallel else "call-root"
