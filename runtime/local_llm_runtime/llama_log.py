"""Route llama.cpp's own log lines into Python logging, and keep the recent ones.

llama-cpp-python either prints llama.cpp's logs to stderr (``verbose=True``) or
swaps the process-wide stdout/stderr file descriptors while loading
(``verbose=False``), which also hides the reason a load failed. Instead we
install one log callback that sends every line to the ``local_llm_runtime.llama_cpp``
logger at DEBUG (quiet by default) and keeps the last lines per thread, so a
failed load can report llama.cpp's own reason in its typed error.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from collections import deque

import llama_cpp

__all__ = ["install", "recent_errors", "start_capture"]

logger = logging.getLogger("local_llm_runtime.llama_cpp")
_local = threading.local()
_installed: list[object] = []  # keeps the ctypes callback alive
_install_lock = threading.Lock()


def _buffer() -> deque[tuple[int, str]]:
    buf: deque[tuple[int, str]] | None = getattr(_local, "buffer", None)
    if buf is None:
        buf = deque(maxlen=64)
        _local.buffer = buf
    return buf


@llama_cpp.llama_log_callback  # type: ignore[untyped-decorator]
def _callback(level: int, text: bytes, _user_data: ctypes.c_void_p) -> None:
    message = text.decode("utf-8", errors="replace")
    _buffer().append((level, message))
    if message.strip():
        logger.debug("%s", message.rstrip())


def install() -> None:
    """Install the callback once per process (idempotent)."""
    with _install_lock:
        if not _installed:
            llama_cpp.llama_log_set(_callback, ctypes.c_void_p(0))
            _installed.append(_callback)


def start_capture() -> None:
    """Forget this thread's earlier log lines (call before a load)."""
    _buffer().clear()


#: ggml_log_level: NONE=0, DEBUG=1, INFO=2, WARN=3, ERROR=4, CONT=5.
_ERROR_LEVELS = (3, 4)


def recent_errors(limit: int = 3) -> str:
    """The last error or warning lines llama.cpp logged on this thread, joined."""
    lines = [m.strip() for level, m in _buffer() if level in _ERROR_LEVELS and m.strip()]
    return "; ".join(lines[-limit:])
