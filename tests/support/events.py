"""Deterministic stand-ins for threading primitives."""

from __future__ import annotations

import threading


class SetAfter(threading.Event):
    """An Event that reads as set from its ``n``-th check on (deterministic cancellation).

    The engine checks a cancel event at known points (before the token loop, at
    each batched step, and from llama.cpp's abort callback during a prompt), so
    counting checks lands the cancel at an exact point without timing.
    """

    def __init__(self, n: int) -> None:
        super().__init__()
        self.checks = 0
        self._n = n

    def is_set(self) -> bool:
        self.checks += 1
        return self.checks >= self._n or super().is_set()
