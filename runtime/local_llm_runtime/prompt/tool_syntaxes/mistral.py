r"""Mistral tool calls: ``[TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]``.

Also the newer form ``[TOOL_CALLS]name[ARGS]{...}`` (or ``name[CALL_ID]id[ARGS]{...}``).
``[TOOL_CALLS]`` is a control token that detokenizing may drop, so a list of
objects that opens the output is read as the call list. Mistral templates accept
only 9-character alphanumeric call ids: ours are mapped to such ids, stably.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, ClassVar

from local_llm_runtime.prompt.tool_syntaxes.base import CallStream, ToolSyntax

__all__ = ["Mistral"]

OPEN, ARGS, CALL_ID = "[TOOL_CALLS]", "[ARGS]", "[CALL_ID]"


class Mistral(ToolSyntax):
    """``[TOOL_CALLS]`` call lists (Mistral 7B v0.3, Mixtral, Mistral Nemo/Small)."""

    name: ClassVar[str] = "mistral"
    markers: ClassVar[tuple[str, ...]] = (OPEN,)

    def prepare_message(self, message: dict[str, Any]) -> dict[str, Any]:
        """Map call ids to the 9 alphanumeric characters Mistral templates insist on."""
        if message.get("tool_call_id") is not None:
            message = {**message, "tool_call_id": _mistral_id(message["tool_call_id"])}
        if message.get("tool_calls"):
            message = {
                **message,
                "tool_calls": [
                    {**call, "id": _mistral_id(call["id"])} if call.get("id") else call
                    for call in message["tool_calls"]
                ],
            }
        return message

    def step(self, stream: CallStream) -> bool:  # noqa: D102 - see ToolSyntax.step
        if stream.mode == "block":
            return _block(stream)
        if stream.mode == "start":
            stripped = stream.buf.lstrip()
            opened = stripped[1:].lstrip()
            if not stripped or (stripped[0] == "[" and not opened):
                return False
            if OPEN.startswith(stripped):
                return False
            if stripped[0] == "[" and opened[0] == "{":
                stream.space, stream.mode = stream.buf[: len(stream.buf) - len(stripped)], "text"
                stream.open_block("", stripped)
                return True
        return stream.text_until(OPEN)

    def grammar_root(self, parallel: bool) -> str:  # noqa: D102 - see ToolSyntax
        more = ' ("," " " call-root)*' if parallel else ""
        return f'"[TOOL_CALLS][" call-root{more} "]"'


def _mistral_id(call_id: Any) -> str:
    text = str(call_id)
    if len(text) == 9 and text.isalnum():
        return text
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:9]


def _block(stream: CallStream) -> bool:
    stripped = stream.buf.lstrip()
    if not stripped:
        return False
    if stripped[0] in "[{":  # [TOOL_CALLS][{...}, ...]
        end = stream.scan.scan(stripped)
        if end is None:
            return False
        raw = stream.buf[: len(stream.buf) - len(stripped) + end]
        stream.block(stream.marker + raw, raw)
    else:  # [TOOL_CALLS]name[ARGS]{...}  (or name[CALL_ID]id[ARGS]{...})
        index = stripped.find(ARGS)
        head = stripped if index < 0 else stripped[:index]
        args = stripped[index + len(ARGS) :].lstrip() if index >= 0 else ""
        if re.search(r"[\s{}\"]", head) or (args and args[0] != "{"):
            stream.text(stream.marker)  # no tool call after all: the marker is text
            stream.mode = "text"
            return True
        end = stream.scan.scan(args) if args else None
        if end is None:
            return False
        raw = stream.buf[: len(stream.buf) - len(args) + end]
        call = {"name": head.split(CALL_ID)[0], "arguments": args[:end]}
        stream.block(stream.marker + raw, json.dumps(call))
    stream.buf, stream.mode = stream.buf[len(raw) :], "text"
    return True
