"""Route llama.cpp's own log lines into Python logging, and keep the recent ones.

llama-cpp-python either prints llama.cpp's logs to stderr (``verbose=True``) or
swaps the process-wide stdout/stderr file descriptors while loading
(``verbose=False``), which also hides the reason a load failed. Instead we
install one log callback that sends every line to the ``local_llm_runtime.llama_cpp``
logger at DEBUG (quiet by default) and keeps the last lines per thread, so a
failed load can report llama.cpp's own reason in its typed error.

Loading with ``verbose=True`` keeps the file descriptors alone, but
``Llama.__init__`` then prints its own notes (model metadata, chat format) to
``sys.stderr``. Swapping ``sys.stderr`` around the load (``contextlib.redirect_stderr``
or the binding's ``suppress_stdout_stderr``) is process-wide: two threads loading at
once restore each other's replacement, leaving ``sys.stderr`` on a dead buffer, and
any other thread's output meanwhile is swallowed. :func:`quiet_prints` instead
gives the binding's ``llama_cpp.llama`` module its own view of ``sys`` whose
``stdout``/``stderr`` are the logger for the loading thread only; ``sys`` itself,
and every other thread, never see a change.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import sys
import threading
from collections import deque
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import llama_cpp

__all__ = ["install", "quiet_prints", "recent_errors", "start_capture"]

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


class _PrintSink:
    """A write-only text stream that sends each printed line to the logger at DEBUG."""

    def write(self, text: str) -> int:
        if text.strip():
            logger.debug("%s", text.rstrip())
        return len(text)

    def flush(self) -> None:
        pass


_SINK = _PrintSink()


def _quiet_depth() -> int:
    depth: int = getattr(_local, "quiet", 0)
    return depth


class _ThreadQuietSys:
    """``sys`` as seen by one binding module: the real one, except while this thread loads."""

    def __init__(self, real: ModuleType) -> None:
        self._real = real

    def __getattr__(self, name: str) -> Any:
        if name in ("stdout", "stderr") and _quiet_depth() > 0:
            return _SINK
        return getattr(self._real, name)


_patched: list[ModuleType] = []


def _patch_binding() -> None:
    with _install_lock:
        if _patched:
            return
        import llama_cpp.llama as binding_llama

        if getattr(binding_llama, "sys", None) is sys:
            binding_llama.sys = _ThreadQuietSys(sys)  # type: ignore[assignment,attr-defined]
        _patched.append(binding_llama)


@contextlib.contextmanager
def quiet_prints() -> Iterator[None]:
    """Send llama-cpp-python's own prints on this thread to the logger, for a load.

    Never assigns ``sys.stdout``/``sys.stderr`` nor touches file descriptors, so it
    is safe while other threads load or write to ``sys.stderr``. Load with
    ``verbose=True`` inside it (``verbose=False`` makes the binding swap them).
    """
    _patch_binding()
    _local.quiet = _quiet_depth() + 1
    try:
        yield
    finally:
        _local.quiet -= 1
