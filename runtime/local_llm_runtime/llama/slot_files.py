"""Long shared prompt prefixes saved to disk, so a restart skips their prefill.

llama-server saves a slot's state to a file on request (``--slot-save-path``,
``/slots/{id}?action=save``); here the runtime does it by itself for the
prefixes worth it: when a request cuts a slot back to a prefix of at least
``LOCAL_LLM_SLOT_SAVE_MIN`` tokens that another conversation had evaluated (a
system prompt or a RAG preamble two conversations share), that prefix's
sequence state is written under ``LOCAL_LLM_SLOT_SAVE_PATH``. After a restart
the first request whose prompt starts with a saved prefix loads it instead of
evaluating it.

Files live in one folder per model identity (the file's sha256, llama-cpp-python's
version, the KV cache type and flash attention: what the state's bytes depend on),
named by a hash of their tokens. Each is written to a temporary file and renamed,
on a background thread (a request never waits for a write); the folder's total is
kept within ``LOCAL_LLM_CACHE_DISK`` MiB by removing the least recently used files
(by mtime, refreshed on a hit). A file that is truncated, fails its checksum or
that llama.cpp refuses is removed and otherwise ignored.

File layout: ``MAGIC``, then little-endian ``n_tokens`` (u64), ``n_state`` (u64),
``crc32`` of the state (u32), the tokens (i32 each) and the state bytes.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import logging
import os
import struct
import tempfile
import threading
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import llama_cpp

from local_llm_runtime.llama.sampling import common_prefix

__all__ = ["SlotFiles", "model_identity"]

logger = logging.getLogger(__name__)

MAGIC = b"LLMSLOT1"
_HEADER = struct.Struct("<QQI")
SUFFIX = ".slot"
_STALE_TMP_S = 600.0
"""Temporary files older than this are leftovers of a process that died mid-write."""


def model_identity(file_id: str, *, kv_cache_type: str | None, flash_attention: bool | None) -> str:
    """The folder name of a model's saved slots: what a saved state's bytes depend on.

    Args:
        file_id: The model file's sha256 (or, when unknown, its path, size and mtime).
        kv_cache_type: The KV cache's element type.
        flash_attention: Whether flash attention is on (it changes the V cache's layout).
    """
    parts = {
        "file": file_id,
        "llama_cpp": getattr(llama_cpp, "__version__", "?"),
        "kv": kv_cache_type or "f16",
        "fa": bool(flash_attention),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def _tokens_name(tokens: Sequence[int]) -> str:
    data = struct.pack(f"<{len(tokens)}i", *tokens)
    return hashlib.sha256(data).hexdigest()[:40] + SUFFIX


@dataclass(frozen=True)
class SavedSlot:
    """A saved prefix found in the folder."""

    path: Path
    tokens: tuple[int, ...]


class SlotFiles:
    """One model's saved prefixes on disk (see the module docstring).

    Args:
        root: ``LOCAL_LLM_SLOT_SAVE_PATH``: every model's folders.
        identity: This model's folder name (:func:`model_identity`).
        limit_bytes: Total size of the files under ``root`` (every model).
        min_tokens: Shortest prefix worth saving.
    """

    def __init__(self, root: Path, identity: str, *, limit_bytes: int, min_tokens: int) -> None:
        self.root = root
        self.folder = root / identity
        self.limit_bytes = limit_bytes
        self.min_tokens = min_tokens
        self._lock = threading.Lock()
        self._index: dict[Path, tuple[int, ...]] | None = None
        """Saved prefixes by file, read on first use."""
        self._writers: list[threading.Thread] = []
        self.saved = 0
        self.loaded = 0
        self.removed = 0

    # ---- finding ----------------------------------------------------------------

    def _scan(self) -> dict[Path, tuple[int, ...]]:
        """Under the lock: the index (reads every file's tokens once)."""
        if self._index is not None:
            return self._index
        index: dict[Path, tuple[int, ...]] = {}
        try:
            names = sorted(os.listdir(self.folder))
        except OSError:
            names = []
        now = time.time()
        for name in names:
            path = self.folder / name
            if not name.endswith(SUFFIX):
                with contextlib.suppress(OSError):
                    if now - path.stat().st_mtime > _STALE_TMP_S:
                        path.unlink()
                continue
            tokens = self._read_tokens(path)
            if tokens is not None:
                index[path] = tokens
        self._index = index
        return index

    def _read_tokens(self, path: Path) -> tuple[int, ...] | None:
        """A file's tokens, or ``None`` (the file is removed) if it is not whole."""
        try:
            with path.open("rb") as f:
                head = f.read(len(MAGIC) + _HEADER.size)
                if len(head) == len(MAGIC) + _HEADER.size and head.startswith(MAGIC):
                    n_tokens, n_state, _crc = _HEADER.unpack(head[len(MAGIC) :])
                    expected = len(head) + 4 * n_tokens + n_state
                    if n_tokens > 0 and os.fstat(f.fileno()).st_size == expected:
                        raw = f.read(4 * n_tokens)
                        tokens = struct.unpack(f"<{n_tokens}i", raw)
                        if path.name == _tokens_name(tokens):
                            return tuple(tokens)
        except (OSError, struct.error, MemoryError):
            pass
        self._remove(path)
        return None

    def best(self, tokens: Sequence[int], more_than: int = 0) -> tuple[SavedSlot, int] | None:
        """The saved prefix sharing the most tokens with ``tokens``, and how many.

        ``None`` unless one shares at least ``min_tokens`` and more than
        ``more_than``. A saved prefix may end past where ``tokens`` leaves it
        (it ended where two prompts diverged, inside a user's text, say): the
        state is restored and cut back. The count leaves ``tokens``' last one
        to be evaluated.
        """
        usable = len(tokens) - 1
        floor = max(more_than, self.min_tokens - 1)
        with self._lock:
            found: tuple[SavedSlot, int] | None = None
            for path, saved in self._scan().items():
                shared = min(common_prefix(saved, tokens), usable)
                if shared > floor and (found is None or shared > found[1]):
                    found = (SavedSlot(path, saved), shared)
            return found

    # ---- reading ------------------------------------------------------------------

    def load(self, saved: SavedSlot) -> Any | None:
        """The state bytes of ``saved`` (a ctypes array), or ``None`` (removed) if damaged."""
        path = saved.path
        try:
            with path.open("rb") as f:
                head = f.read(len(MAGIC) + _HEADER.size)
                n_tokens, n_state, crc = _HEADER.unpack(head[len(MAGIC) :])
                if not head.startswith(MAGIC) or n_tokens != len(saved.tokens):
                    raise ValueError("header")
                f.seek(4 * n_tokens, os.SEEK_CUR)
                data = (ctypes.c_uint8 * n_state)()
                if f.readinto(data) != n_state or f.read(1):
                    raise ValueError("length")
            if zlib.crc32(data) != crc:
                raise ValueError("checksum")
        except (OSError, ValueError, struct.error, MemoryError) as exc:
            logger.warning("Removing a damaged saved prompt state %s (%s)", path, exc)
            self.discard(path)
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # the least recently used files go first
        self.loaded += 1
        return data

    def discard(self, path: Path) -> None:
        """Forget and remove a file (damaged, or refused by llama.cpp)."""
        with self._lock:
            if self._index is not None:
                self._index.pop(path, None)
        self._remove(path)

    def _remove(self, path: Path) -> None:
        with contextlib.suppress(OSError):
            path.unlink()
            self.removed += 1

    # ---- writing ------------------------------------------------------------------

    def save(self, ctx: Any, seq: int, tokens: Sequence[int]) -> bool:
        """Copy sequence ``seq`` of ``ctx`` (holding ``tokens``) now; write it in the background.

        Returns:
            Whether a write was started (not for a short or already saved prefix,
            a state larger than the budget, or a failed copy).
        """
        tokens = tuple(tokens)
        if len(tokens) < self.min_tokens:
            return False
        path = self.folder / _tokens_name(tokens)
        with self._lock:
            index = self._scan()
            if path in index:
                return False
            size = int(llama_cpp.llama_state_seq_get_size(ctx, seq))
            if size <= 0 or size > self.limit_bytes:
                return False
            data = (ctypes.c_uint8 * size)()
            copied = int(llama_cpp.llama_state_seq_get_data(ctx, data, size, seq))
            if copied <= 0:
                return False
            index[path] = tokens  # claimed: another cut of the same prefix won't write it again
            writer = threading.Thread(
                target=self._write,
                args=(path, tokens, data, copied),
                name="local-llm-slot-save",
                daemon=True,
            )
            self._writers = [w for w in self._writers if w.is_alive()] + [writer]
        writer.start()
        return True

    def _write(self, path: Path, tokens: tuple[int, ...], data: Any, size: int) -> None:
        tmp: str | None = None
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            view = memoryview(data).cast("B")[:size]
            head = MAGIC + _HEADER.pack(len(tokens), size, zlib.crc32(view))
            fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".tmp-", suffix=".part")
            with os.fdopen(fd, "wb") as f:
                f.write(head)
                f.write(struct.pack(f"<{len(tokens)}i", *tokens))
                f.write(view)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            tmp = None
            self.saved += 1
            logger.debug("Saved a prompt prefix of %d tokens to %s", len(tokens), path)
            self._trim(keep=path)
        except OSError as exc:
            logger.warning("Could not save a prompt prefix to %s: %s", self.folder, exc)
            with self._lock:
                if self._index is not None:
                    self._index.pop(path, None)
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)

    def _trim(self, keep: Path) -> None:
        """Remove the least recently used files under ``root`` until the budget holds."""
        files: list[tuple[float, int, Path]] = []
        for path in self.root.glob(f"*/*{SUFFIX}"):
            with contextlib.suppress(OSError):
                st = path.stat()
                files.append((st.st_mtime, st.st_size, path))
        total = sum(size for _mtime, size, _path in files)
        for _mtime, size, path in sorted(files):
            if total <= self.limit_bytes:
                break
            if path == keep:
                continue
            if path.parent == self.folder:
                self.discard(path)
            else:
                self._remove(path)
            total -= size

    def flush(self, timeout: float | None = None) -> None:
        """Wait for the writes started so far (tests, shutdown)."""
        for writer in list(self._writers):
            writer.join(timeout)
