r"""Hermes / Qwen2.5 tool calls: ``<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>``.

One block per call. Also what a model without a chat template is taught (the
ChatML fallback), and what a template with no known syntax is assumed to teach.
Small models (Qwen2.5-Coder-0.5B among them) often skip the tags, fence the
JSON in Markdown, or write parallel calls as bare objects after the first call:
those are read as calls too.
"""

from __future__ import annotations

from typing import ClassVar

from local_llm_runtime.prompt.tool_syntaxes.base import (
    FENCE,
    CallStream,
    JsonEnd,
    ToolSyntax,
    partial_suffix,
)

__all__ = ["Hermes"]

OPEN, CLOSE = "<tool_call>", "</tool_call>"


class Hermes(ToolSyntax):
    """``<tool_call>`` JSON blocks (Qwen2.5, Hermes 2/3, the ChatML fallback)."""

    name: ClassVar[str] = "hermes"
    markers: ClassVar[tuple[str, ...]] = (OPEN,)

    def step(self, stream: CallStream) -> bool:  # noqa: D102 - see ToolSyntax.step
        if stream.mode == "block":
            return _block(stream)
        if stream.mode == "start" or stream.after_call:
            started = _bare_start(stream)
            if started is not None:
                return started
        return stream.text_until(OPEN, CLOSE)

    def finish(self, stream: CallStream, rest: str) -> None:  # noqa: D102 - see ToolSyntax
        if stream.mode == "block":  # a missing closing tag is fine
            body = rest[: len(rest) - partial_suffix(rest, stream.close)] if stream.close else rest
            stream.block(stream.marker + rest, body)
        else:
            stream.text(rest)

    def grammar_root(self, parallel: bool) -> str:  # noqa: D102 - see ToolSyntax
        block = '"<tool_call>\\n" call-root "\\n</tool_call>"'
        return f'{block} ("\\n" {block})*' if parallel else block


def _bare_start(stream: CallStream) -> bool | None:
    """Take a JSON call that opens the output (or follows a call), bare or fenced.

    Returns ``None`` once the text is known to be plain, ``False`` to wait.
    """
    stripped = stream.buf.lstrip()
    if stream.after_call:
        stripped = stripped.lstrip(",").lstrip()
    space = stream.buf[: len(stream.buf) - len(stripped)]
    fence = FENCE.match(stripped)
    rest = stripped[fence.end() :].lstrip() if fence else stripped
    fence_line = stripped.startswith("`") and len(stripped) < 16 and "\n" not in stripped
    if not rest or (fence_line and not fence):
        return False  # wait for the first character after the fence, or the fence line
    if rest[0] != "{":
        return None
    stream.space = space
    if fence:
        stream.open_block(stripped[: len(stripped) - len(rest)], rest, "```")
    else:
        stream.open_block("", rest)
    return True


def _block(stream: CallStream) -> bool:
    if not stream.close:  # bare JSON: the value's end ends the block
        end = stream.scan.scan(stream.buf)
        if end is None:
            return False
        stream.block(stream.buf[:end], stream.buf[:end])
        stream.buf, stream.mode = stream.buf[end:], "text"
        return True
    close = _find_outside_strings(stream.buf, stream.close)
    reopen = _find_outside_strings(stream.buf, OPEN) if stream.marker == OPEN else -1
    if close < 0 and reopen < 0:  # reopen: a new block before this one closed
        return False
    if close >= 0 and (reopen < 0 or close < reopen):
        body, end = stream.buf[:close], close + len(stream.close)
    else:
        body, end = stream.buf[:reopen], reopen
    stream.block(stream.marker + stream.buf[:end], body)
    stream.buf, stream.mode = stream.buf[end:], "text"
    return True


def _find_outside_strings(text: str, marker: str) -> int:
    """The first ``marker`` in ``text`` that is not inside a JSON string, or -1.

    ``{"s": "</tool_call>"}`` is an argument value, not the end of the block.
    """
    index = text.find(marker)
    while index >= 0:
        scan = JsonEnd()
        scan.scan(text[:index])
        if not scan.in_string:
            return index
        index = text.find(marker, index + 1)
    return -1
