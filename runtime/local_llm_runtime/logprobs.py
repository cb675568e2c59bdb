"""Log-probabilities of generated tokens: attaching them to chunks, and their wire shapes.

Every backend reports a request's ``logprobs`` the same way: each
:class:`~local_llm_runtime.types.TextDelta` (and
:class:`~local_llm_runtime.types.ReasoningDelta`) carries the tokens whose text
it is the first to show, as :class:`~local_llm_runtime.types.TokenLogprob`.
A token whose text is held back (part of a possible stop sequence, half a UTF-8
character, half a ``<think>`` tag) waits in a :class:`LogprobCarrier` and goes
with the next piece of text; tokens that never become text (a stop sequence,
the end-of-generation token, a tool call's markup) are not reported, as
OpenAI reports only the content's tokens.

Wire shapes (pure functions, no I/O):

* :func:`token_logprob_object` / :func:`token_logprob_of`: one token as OpenAI's
  ``choices[].logprobs.content[]`` item, which is also Ollama's ``logprobs[]``
  item: ``{"token", "logprob", "bytes", "top_logprobs": [{"token", "logprob",
  "bytes"}]}``;
* :class:`LegacyLogprobs`: OpenAI's legacy ``/v1/completions`` shape
  ``{"tokens", "token_logprobs", "top_logprobs", "text_offset"}``.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

from local_llm_runtime.types import (
    Chunk,
    ReasoningDelta,
    TextDelta,
    TokenLogprob,
    ToolCallDelta,
    TopLogprob,
)

__all__ = [
    "MAX_TOP_LOGPROBS",
    "LegacyLogprobs",
    "LogprobCarrier",
    "token_logprob_object",
    "token_logprob_of",
    "token_text",
]

MAX_TOP_LOGPROBS = 20
"""The most alternatives per position a request may ask for (OpenAI's and Ollama's limit)."""


def token_text(piece: bytes) -> str:
    r"""A token's text: its UTF-8 bytes decoded, a byte that is no whole character as ``\xNN``.

    OpenAI writes the bytes of a token that is part of a character this way; the
    exact bytes are in ``bytes``.
    """
    return piece.decode("utf-8", errors="backslashreplace")


class LogprobCarrier:
    """Attaches generated tokens' log-probabilities to the chunks that show their text.

    Feed it each token's :class:`TokenLogprob` (:meth:`add`) before the chunks that
    token produces, and pass the chunks through :meth:`chunks`: the pending tokens
    go with the first text or reasoning chunk; a tool call drops them (its markup
    is no content).

    Args:
        hide_reasoning: Drop reasoning chunks after attaching (``reasoning="hide"``):
            fed reasoning chunks, hidden reasoning tokens leave with them instead
            of being attached to the answer's first text.
    """

    def __init__(self, *, hide_reasoning: bool = False) -> None:
        self._pending: list[TokenLogprob] = []
        self.hide_reasoning = hide_reasoning

    def add(self, item: TokenLogprob) -> None:
        """A token was generated (its text may come in a later chunk)."""
        self._pending.append(item)

    def attach(self, chunk: Chunk) -> Chunk:
        """``chunk`` with the pending tokens, if it is text or reasoning."""
        if isinstance(chunk, TextDelta | ReasoningDelta):
            if self._pending:
                chunk = replace(chunk, logprobs=(*chunk.logprobs, *self._pending))
                self._pending = []
        elif isinstance(chunk, ToolCallDelta):
            self._pending = []
        return chunk

    def chunks(self, chunks: Iterable[Chunk]) -> Iterator[Chunk]:
        """:meth:`attach` over a stream of chunks (without reasoning if ``hide_reasoning``)."""
        for chunk in chunks:
            attached = self.attach(chunk)
            if not (self.hide_reasoning and isinstance(attached, ReasoningDelta)):
                yield attached


def _top_object(item: TopLogprob) -> dict[str, Any]:
    return {"token": item.token, "logprob": item.logprob, "bytes": list(item.bytes)}


def token_logprob_object(item: TokenLogprob, *, empty_top: bool = True) -> dict[str, Any]:
    """One token as OpenAI's ``logprobs.content[]`` item (Ollama's ``logprobs[]`` item too).

    Args:
        item: The token.
        empty_top: Include ``top_logprobs: []`` when there are no alternatives
            (OpenAI does; Ollama omits the field).
    """
    out: dict[str, Any] = {
        "token": item.token,
        "logprob": item.logprob,
        "bytes": list(item.bytes),
    }
    if item.top_logprobs or empty_top:
        out["top_logprobs"] = [_top_object(top) for top in item.top_logprobs]
    return out


def _bytes_of(value: Any, token: str) -> tuple[int, ...]:
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return tuple(int(b) & 0xFF for b in value)
    return tuple(token.encode("utf-8"))


def token_logprob_of(data: Mapping[str, Any]) -> TokenLogprob | None:
    """A :class:`TokenLogprob` from an OpenAI or Ollama item (``None`` if malformed)."""
    token, logprob = data.get("token"), data.get("logprob")
    if not isinstance(token, str) or not isinstance(logprob, int | float):
        return None
    tops: list[TopLogprob] = []
    for top in data.get("top_logprobs") or ():
        if not isinstance(top, Mapping):
            continue
        text, value = top.get("token"), top.get("logprob")
        if isinstance(text, str) and isinstance(value, int | float):
            tops.append(TopLogprob(text, float(value), _bytes_of(top.get("bytes"), text)))
    return TokenLogprob(
        token=token,
        logprob=float(logprob),
        bytes=_bytes_of(data.get("bytes"), token),
        top_logprobs=tuple(tops),
    )


class LegacyLogprobs:
    """OpenAI's legacy completion ``logprobs`` objects, for one response (streamed or not).

    ``text_offset`` counts characters of the completion text from its start, also
    across streamed chunks; a token inside a UTF-8 character has the offset of
    that character. ``top_logprobs`` maps the alternatives' texts to their
    log-probabilities and, as OpenAI's, holds the generated token too.
    """

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._offset = 0

    def object(self, items: Sequence[TokenLogprob]) -> dict[str, Any]:
        """``{"tokens", "token_logprobs", "top_logprobs", "text_offset"}`` for ``items``."""
        tokens: list[str] = []
        values: list[float] = []
        tops: list[dict[str, float]] = []
        offsets: list[int] = []
        for item in items:
            offsets.append(self._offset)
            self._offset += len(self._decoder.decode(bytes(item.bytes)))
            tokens.append(item.token)
            values.append(item.logprob)
            top = {alt.token: alt.logprob for alt in item.top_logprobs}
            top.setdefault(item.token, item.logprob)
            tops.append(top)
        return {
            "tokens": tokens,
            "token_logprobs": values,
            "top_logprobs": tops,
            "text_offset": offsets,
        }
