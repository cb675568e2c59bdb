"""Split a model's reasoning (``<think>...</think>``) from its answer, while streaming.

Reasoning models (DeepSeek-R1, Qwen3, QwQ, ...) write their chain of thought in a
``<think>`` block before the answer. :class:`ThinkSplitter` is fed the output text
delta by delta -- a tag may be cut anywhere between two deltas -- and returns
labelled pieces: ``("reasoning", ...)`` for the inside of the block and
``("text", ...)`` for the answer. It holds back only what could still become a tag,
so both streams flow with no delay beyond a partial tag.

Like Ollama, only a block that opens the output counts (whitespace before it is
dropped); once the answer has started, tags are ordinary text. Whitespace right
after ``<think>`` and right after ``</think>`` is dropped. When the chat template
already opened the block in the prompt (DeepSeek-R1 style, see
:attr:`local_llm_runtime.prompt.chat_template.ChatTemplate.opens_thinking`), pass
``started_inside=True``: the output begins inside the reasoning.
"""

from __future__ import annotations

from typing import Literal

__all__ = ["Piece", "PieceKind", "ReasoningMode", "ThinkSplitter"]

ReasoningMode = Literal["separate", "hide", "inline"]
"""What to do with reasoning: return it apart from the answer, drop it, or keep it inline."""

PieceKind = Literal["text", "reasoning"]
Piece = tuple[PieceKind, str]

_State = Literal["start", "inside", "answer"]


def _partial_suffix(text: str, tag: str) -> int:
    """Return the length of the longest end of ``text`` that begins ``tag`` (not all of it)."""
    for size in range(min(len(text), len(tag) - 1), 0, -1):
        if tag.startswith(text[-size:]):
            return size
    return 0


class ThinkSplitter:
    r"""Streaming splitter of ``<think>`` reasoning and answer text.

    Example:
        >>> splitter = ThinkSplitter()
        >>> splitter.feed("<think>Let me see.</th") + splitter.feed("ink>\n\n42")
        [('reasoning', 'Let me see.'), ('text', '42')]
    """

    def __init__(
        self,
        *,
        open_tag: str = "<think>",
        close_tag: str = "</think>",
        started_inside: bool = False,
    ) -> None:
        """Create a splitter.

        Args:
            open_tag: The tag that opens the reasoning block.
            close_tag: The tag that closes it.
            started_inside: The output begins inside the reasoning block (the prompt
                already ended with ``open_tag``).
        """
        if not open_tag or not close_tag:
            raise ValueError("open_tag and close_tag must not be empty")
        self._open = open_tag
        self._close = close_tag
        self._state: _State = "inside" if started_inside else "start"
        self._buffer = ""
        self._strip = started_inside
        """Drop leading whitespace of what comes next (after a tag)."""

    @property
    def in_reasoning(self) -> bool:
        """Whether the text fed so far ends inside the reasoning block."""
        return self._state == "inside"

    def feed(self, text: str) -> list[Piece]:
        """Take the next delta of output and return the pieces now safe to show.

        Args:
            text: The next piece of the model's output.

        Returns:
            ``(kind, text)`` pairs in order, adjacent pieces of one kind merged.
        """
        self._buffer += text
        out: list[Piece] = []
        while self._buffer:
            before = (self._state, len(self._buffer))
            if self._state == "start":
                self._step_start(out)
            elif self._state == "inside":
                self._step_inside(out)
            else:
                self._emit(out, "text", self._buffer)
                self._buffer = ""
            if (self._state, len(self._buffer)) == before:
                break  # waiting for more text
        return out

    def finish(self) -> list[Piece]:
        """Flush what is held back at the end of the output.

        Returns:
            The remaining pieces: a partial tag is returned as what it is in.
        """
        out: list[Piece] = []
        kind: PieceKind = "reasoning" if self._state == "inside" else "text"
        self._emit(out, kind, self._buffer)
        self._buffer = ""
        return out

    def _step_start(self, out: list[Piece]) -> None:
        stripped = self._buffer.lstrip()
        if not stripped:
            return
        if stripped.startswith(self._open):
            self._buffer = stripped[len(self._open) :]
            self._state = "inside"
            self._strip = True
        elif not self._open.startswith(stripped):
            self._state = "answer"

    def _step_inside(self, out: list[Piece]) -> None:
        index = self._buffer.find(self._close)
        if index >= 0:
            self._emit(out, "reasoning", self._buffer[:index])
            self._buffer = self._buffer[index + len(self._close) :]
            self._state = "answer"
            self._strip = True
            return
        keep = _partial_suffix(self._buffer, self._close)
        self._emit(out, "reasoning", self._buffer[: len(self._buffer) - keep])
        self._buffer = self._buffer[len(self._buffer) - keep :]

    def _emit(self, out: list[Piece], kind: PieceKind, text: str) -> None:
        if self._strip:
            text = text.lstrip()
            if not text:
                return
            self._strip = False
        if not text:
            return
        if out and out[-1][0] == kind:
            out[-1] = (kind, out[-1][1] + text)
        else:
            out.append((kind, text))
