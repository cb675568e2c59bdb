"""Small streaming text filters used by the generation loop (pure, no engine).

* :class:`Utf8Decoder` turns token byte pieces into text without splitting a
  multi-byte character across deltas.
* :class:`StopFilter` cuts the output at the first stop sequence, holding back
  only the tail that could still become one -- so stop sequences are honoured
  while streaming too, and never leak into the output.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence

__all__ = ["StopFilter", "Utf8Decoder"]


class Utf8Decoder:
    """Incremental UTF-8 decoding of token pieces."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, data: bytes) -> str:
        """Decode the next bytes; incomplete characters wait for the next call."""
        return self._decoder.decode(data)

    def finish(self) -> str:
        """Flush (an incomplete trailing character becomes U+FFFD)."""
        return self._decoder.decode(b"", final=True)


class StopFilter:
    """Cut text at the first of several stop sequences, streaming-safe.

    Args:
        stops: The stop sequences (empty strings are ignored).
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = [s for s in stops if s]
        self._pending = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        """Add text; return what is safe to emit now (empty once stopped)."""
        if self.stopped:
            return ""
        if not self._stops:
            return text
        buf = self._pending + text
        cut = min((i for i in (buf.find(s) for s in self._stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            self._pending = ""
            return buf[:cut]
        hold = 0
        for stop in self._stops:
            for size in range(min(len(stop) - 1, len(buf)), 0, -1):
                if buf.endswith(stop[:size]):
                    hold = max(hold, size)
                    break
        self._pending = buf[len(buf) - hold :] if hold else ""
        return buf[: len(buf) - hold]

    def finish(self) -> str:
        """Release held-back text at the end of generation."""
        out, self._pending = ("" if self.stopped else self._pending), ""
        return out
